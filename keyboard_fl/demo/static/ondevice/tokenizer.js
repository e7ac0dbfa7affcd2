// SentencePiece unigram encoding in the page (Kudo 2018), for keyboard_fl's
// tokenizer.json (keyboard_fl/export/web.py): the Viterbi segmentation of
// SentencePiece's unigram_model.cc (EncodeOptimized), in float32 as there, so
// the pieces equal Python's sentencepiece; and keyboard_fl.text's
// normalization (NFKC + casefold) and word pattern.

export const WORD_START = 0, CONTINUATION = 1, BOUNDARY = 2; // keyboard_fl.tokenizer
const NORMAL = 1, USER_DEFINED = 4;
const UNK_PENALTY = 10; // sentencepiece kUnkPenalty
const SPACE = "\u2581";
// keyboard_fl.text.WORD_RE: runs of letters/digits with inner apostrophes (Python's [^\W_]).
export const WORD_RE = /^[\p{L}\p{N}]+(?:'[\p{L}\p{N}]+)*$/u;
export const WORDS_G = /[\p{L}\p{N}]+(?:'[\p{L}\p{N}]+)*/gu;
// Python's str.isspace() characters (what str.split() splits on).
export const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const SPLIT_RE = new RegExp(`[${PY_SPACE}]+`, "u");
export const IS_SPACE = new RegExp(`^[${PY_SPACE}]$`, "u");
const f32 = Math.fround;

export class Unigram {
  constructor(spec) {
    if (spec.format !== "keyboard_fl.unigram/1") throw new Error(`tokenizer.json: unknown format ${spec.format}`);
    this.pieces = spec.pieces;
    this.kinds = Int8Array.from(spec.kinds);
    this.scores = Float32Array.from(spec.scores);
    this.unkId = spec.unk_id;
    this.dummyPrefix = spec.add_dummy_prefix;
    this.casefold = new Map(Object.entries(spec.casefold));
    this.lookup = new Map();
    this.maxLen = 1;
    let minScore = Infinity, maxScore = -Infinity;
    spec.types.forEach((t, i) => {
      if (t === NORMAL) { minScore = Math.min(minScore, this.scores[i]); maxScore = Math.max(maxScore, this.scores[i]); }
      if (t === NORMAL || t === USER_DEFINED) {
        this.lookup.set(spec.pieces[i], i);
        this.maxLen = Math.max(this.maxLen, Array.from(spec.pieces[i]).length);
      }
    });
    this.types = spec.types;
    this.maxScore = maxScore;
    this.unkScore = f32(minScore - UNK_PENALTY);
    // Surface text each piece adds to a word (keyboard_fl.tokenizer.Tokenizer.piece_text).
    this.pieceText = spec.pieces.map((p, i) => (this.kinds[i] !== BOUNDARY ? p.split(SPACE).join("") : ""));
  }

  /** keyboard_fl.text.normalize: NFKC, then casefold character by character. */
  normalize(text) {
    let out = "";
    for (const ch of text.normalize("NFKC")) out += this.casefold.get(ch) ?? ch;
    return out;
  }

  /** Whitespace-delimited chunks of normalized text (Python's str.split()). */
  chunks(text) {
    return this.normalize(text).split(SPLIT_RE).filter((c) => c !== "");
  }

  /** Piece ids of one chunk (no whitespace inside), as sentencepiece encodes it. */
  encodeChunk(chunk) {
    const cps = Array.from((this.dummyPrefix ? SPACE : "") + chunk);
    const n = cps.length;
    const score = new Float32Array(n + 1), start = new Int32Array(n + 1).fill(-1), id = new Int32Array(n + 1).fill(-1);
    start[0] = 0;
    const relax = (end, cand, from, pid) => {
      if (start[end] === -1 || cand > score[end]) { score[end] = cand; start[end] = from; id[end] = pid; }
    };
    for (let i = 0; i < n; i++) {
      const here = score[i];
      let single = false, key = "";
      for (let j = i; j < n && j - i < this.maxLen; j++) {
        key += cps[j];
        const pid = this.lookup.get(key);
        if (pid === undefined) continue;
        const len = j + 1 - i;
        const s = this.types[pid] === USER_DEFINED ? f32(len * this.maxScore - 0.1) : this.scores[pid];
        relax(j + 1, f32(s + here), i, pid);
        if (len === 1) single = true;
      }
      if (!single) relax(i + 1, f32(this.unkScore + here), i, this.unkId);
    }
    const back = [];
    for (let e = n; e > 0; e = start[e]) back.push(id[e]);
    const ids = [];
    for (const t of back.reverse()) {
      if (t === this.unkId && ids.length && ids[ids.length - 1] === this.unkId) continue; // runs of unknowns are one <unk>
      ids.push(t);
    }
    return ids;
  }

  /** Piece ids of a text without framing: Tokenizer.encode(text, bos=False, eos=False). */
  encode(text) {
    const ids = [];
    for (const c of this.chunks(text)) ids.push(...this.encodeChunk(c));
    return ids;
  }

  /** Tokenizer.word_of: the word a word-start piece and its continuations spell. */
  wordOf(ids) {
    let w = "";
    for (const i of ids) w += this.pieceText[i];
    return w;
  }
}

/** Normalized words of a text (keyboard_fl.text.words). */
export function words(tok, text) {
  return tok.normalize(text).match(WORDS_G) || [];
}
