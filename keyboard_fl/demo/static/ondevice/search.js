// The whole-word search of keyboard_fl.strip / keyboard_fl.export.runner.OnnxSuggester,
// in the page: the context split, prefix-constrained beam search over pieces to the
// next word boundary, the sum over segmentations of a word and the dictionary filter.
// Arithmetic is float32 where the Python twin is (Math.fround), so the ranks agree.

import { BOUNDARY, CONTINUATION, IS_SPACE, WORD_RE, WORD_START } from "./tokenizer.js";

const NEG_INF = Math.fround(-1e30);
const f32 = Math.fround;
const BOS_ID = 2;

/** keyboard_fl.strip.split_context: [context, partial word] of normalized text. */
export function splitContext(tok, text) {
  const norm = tok.normalize(text);
  const cps = Array.from(norm);
  if (!cps.length || IS_SPACE.test(cps[cps.length - 1])) return [norm, ""];
  let end = cps.length;
  while (end > 0 && IS_SPACE.test(cps[end - 1])) end--;
  let startAt = end;
  while (startAt > 0 && !IS_SPACE.test(cps[startAt - 1])) startAt--;
  const head = cps.slice(0, startAt).join(""), last = cps.slice(startAt).join("");
  if (WORD_RE.test(last) || (last.endsWith("'") && WORD_RE.test(last.slice(0, -1)))) return [head, last];
  return [norm + " ", ""];
}

/** keyboard_fl.strip.prefix_tables: allowed[(P+2)*V] (Uint8) and advance[V]. */
export function prefixTables(tok, prefix, maxPrefix) {
  const v = tok.pieces.length, texts = tok.pieceText, kinds = tok.kinds;
  const n = Array.from(prefix).length;
  if (n > maxPrefix) throw new Error(`prefix longer than max_prefix=${maxPrefix}`);
  const rows = maxPrefix + 2;
  const allowed = new Uint8Array(rows * v);
  const advance = Int32Array.from(texts, (t) => Array.from(t).length);
  for (let r = 1; r < rows; r++) for (let i = 0; i < v; i++) allowed[r * v + i] = kinds[i] === CONTINUATION ? 1 : 0;
  const cps = Array.from(prefix);
  if (n === 0) {
    for (let i = 0; i < v; i++) allowed[i] = kinds[i] === WORD_START ? 1 : 0;
    return { allowed, advance, v };
  }
  for (let i = 0; i < v; i++) {
    const t = texts[i];
    if (kinds[i] !== WORD_START) continue;
    if (t === "" || (t[0] === prefix[0] && (t.startsWith(prefix) || prefix.startsWith(t)))) allowed[i] = 1;
  }
  for (let ell = 0; ell < n; ell++) {
    const rest = cps.slice(ell).join(""), row = (1 + ell) * v;
    for (let i = 0; i < v; i++) {
      const t = texts[i];
      allowed[row + i] = kinds[i] === CONTINUATION && t !== "" && (t.startsWith(rest) || rest.startsWith(t)) ? 1 : 0;
    }
  }
  return { allowed, advance, v };
}

/**
 * Per row of [rows, v] logits: m (max), logS (f32 log Σ exp(x − m)) and end (log P(boundary)),
 * from one pass of exp. lp[i] = f32(f32(x[i] − m) − logS), as numpy's log_softmax in float32.
 */
export function rowStats(x, rows, v, boundary) {
  const m = new Float32Array(rows), logS = new Float32Array(rows), end = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * v;
    let mx = -Infinity;
    for (let i = 0; i < v; i++) if (x[o + i] > mx) mx = x[o + i];
    let s = 0, sb = 0;
    for (let i = 0; i < v; i++) {
      const e = Math.exp(f32(x[o + i] - mx));
      s += e;
      if (boundary[i]) sb += e;
    }
    m[r] = mx;
    logS[r] = f32(Math.log(s));
    end[r] = Math.log(sb) - Math.log(s);
  }
  return { m, logS, end };
}

/** Top k of `score[b] + lp[b, i]` over allowed (b, i), ties to the lower flat index b·v + i. */
function topAllowed(x, st, v, score, rowOf, allowed, k) {
  const vals = new Float32Array(k).fill(NEG_INF), idx = new Int32Array(k);
  for (let j = 0; j < k; j++) idx[j] = j; // unfilled slots: the lowest flat indices at −1e30, as numpy's top_k
  let filled = 0;
  for (let b = 0; b < score.length; b++) {
    const row = rowOf(b) * v, o = b * v, mb = st.m[b], ls = st.logS[b], sb = score[b];
    for (let i = 0; i < v; i++) {
      if (!allowed[row + i]) continue;
      const s = f32(sb + f32(f32(x[o + i] - mb) - ls));
      if (filled === k && !(s > vals[k - 1])) continue;
      let j = filled < k ? filled++ : k - 1;
      while (j > 0 && s > vals[j - 1]) { vals[j] = vals[j - 1]; idx[j] = idx[j - 1]; j--; }
      vals[j] = s; idx[j] = o + i;
    }
  }
  return [vals, idx];
}

/**
 * OnnxSuggester.word_search for one context. `step(tokens, c, h, batch)` runs the model.
 * Returns {pieces: [depth][beam] arrays of ids, scores: [depth] Float32Array(beam)}.
 */
export async function wordSearch(step, boundary, ctx, tables, prefixLen, beam, depth) {
  const { allowed, advance, v } = tables;
  let [score, piece] = topAllowed(ctx.logits, rowStats(ctx.logits, 1, v, boundary), v, Float32Array.of(0), () => 0, allowed, beam);
  let ell = Int32Array.from(piece, (p) => Math.min(advance[p], prefixLen));
  let seq = Array.from(piece, (p) => [p]);
  const hd = ctx.c.length, ed = ctx.h.length;
  let c = new Float32Array(beam * hd), h = new Float32Array(beam * ed);
  for (let b = 0; b < beam; b++) { c.set(ctx.c, b * hd); h.set(ctx.h, b * ed); }
  const allPieces = [], allScores = [];
  for (let d = 0; d < depth; d++) {
    const out = await step(Int32Array.from(piece), c, h, beam);
    const st = rowStats(out.logits, beam, v, boundary);
    const scores = new Float32Array(beam);
    for (let b = 0; b < beam; b++) {
      const done = ell[b] === prefixLen && score[b] > NEG_INF / 2;
      scores[b] = done ? f32(score[b] + f32(st.end[b])) : -Infinity;
    }
    allPieces.push(seq);
    allScores.push(scores);
    if (d === depth - 1) break;
    const [s2, flat] = topAllowed(out.logits, st, v, score, (b) => 1 + ell[b], allowed, beam);
    const parent = Int32Array.from(flat, (f) => Math.floor(f / v));
    piece = Int32Array.from(flat, (f) => f % v);
    ell = Int32Array.from(parent, (p, b) => Math.min(ell[p] + advance[piece[b]], prefixLen));
    seq = Array.from(parent, (p, b) => [...seq[p].slice(0, d + 1), piece[b]]);
    const c2 = new Float32Array(beam * hd), h2 = new Float32Array(beam * ed);
    for (let b = 0; b < beam; b++) {
      c2.set(out.c.subarray(parent[b] * hd, parent[b] * hd + hd), b * hd);
      h2.set(out.h.subarray(parent[b] * ed, parent[b] * ed + ed), b * ed);
    }
    c = c2; h = h2; score = s2;
  }
  return { pieces: allPieces, scores: allScores };
}

function logaddexp(a, b) {
  const m = Math.max(a, b);
  return m + Math.log1p(Math.exp(-Math.abs(a - b)));
}

/** keyboard_fl.strip.collect_words with the dictionary filter. */
export function collectWords(tok, found, k, prefix, accepts) {
  const best = new Map();
  found.scores.forEach((row, d) => {
    row.forEach((s, b) => {
      if (!Number.isFinite(s)) return;
      const word = tok.wordOf(found.pieces[d][b].slice(0, d + 1));
      if (!word || !word.startsWith(prefix) || !WORD_RE.test(word)) return;
      if (accepts && !accepts(word)) return;
      best.set(word, best.has(word) ? logaddexp(best.get(word), s) : s);
    });
  });
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return [...best.entries()].sort((a, b) => b[1] - a[1] || cmp(a[0], b[0])).slice(0, k);
}

export { BOS_ID, BOUNDARY };
