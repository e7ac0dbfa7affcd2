// The keyboard on this device: a run's export (int8 or float ONNX step model,
// tokenizer.json, words.txt) run with onnxruntime-web (WASM), served by the demo
// itself. Mirrors keyboard_fl.export.runner.OnnxSuggester: the model state after
// the context is cached per piece, and each whitespace chunk's pieces are cached,
// so typing inside a word re-runs only the word search. Nothing typed leaves the page.

import { Unigram, words as wordsOf } from "./tokenizer.js";
import { BOS_ID, collectWords, prefixTables, splitContext, wordSearch } from "./search.js";
import { BOS, GLOBAL_K, WEIGHT, interpolate } from "./personal.js";

const ORT_URL = "/static/vendor/onnxruntime-web/";
let ortPromise = null;

/** onnxruntime-web, loaded once from this server: single-threaded WASM, no worker, no CDN. */
export function loadOrt() {
  if (!ortPromise) {
    ortPromise = import(ORT_URL + "ort.wasm.min.mjs").then((ort) => {
      ort.env.wasm.wasmPaths = ORT_URL;
      ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one step is ~0.1 ms anyway
      ort.env.wasm.proxy = false;
      return ort;
    });
  }
  return ortPromise;
}

async function fetchOk(url, kind) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return kind === "json" ? r.json() : kind === "text" ? r.text() : new Uint8Array(await r.arrayBuffer());
}

export class OnDeviceSuggester {
  /** urls: {manifest, model, tokenizer, words} from GET /api/models (model: int8 or float). */
  static async load(urls) {
    const ort = await loadOrt();
    const [manifest, spec, wordList, bytes] = await Promise.all([
      fetchOk(urls.manifest, "json"), fetchOk(urls.tokenizer, "json"), fetchOk(urls.words, "text"), fetchOk(urls.model, "bytes"),
    ]);
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    return new OnDeviceSuggester(ort, session, manifest, new Unigram(spec), wordList);
  }

  constructor(ort, session, manifest, tok, wordList) {
    this.ort = ort;
    this.session = session;
    this.tok = tok;
    this.search = manifest.search; // {beam, depth, max_prefix}
    this.hidden = manifest.hidden_dim;
    this.embed = manifest.embed_dim;
    this.publicWords = new Set(wordList.split("\n").filter((w) => w));
    this.userWords = new Set(); // words this user typed: in this page's memory only
    this.boundary = Uint8Array.from(tok.kinds, (k) => (k === 1 ? 0 : 1)); // ends_word: not a continuation
    this.tables = new Map();
    this.chunkIds = new Map();
    this.ctxIds = [];
    this.ctxStates = [];
    this.step = this.step.bind(this);
  }

  async step(tokens, c, h, batch) {
    const T = this.ort.Tensor;
    const out = await this.session.run({
      token: new T("int32", tokens, [batch]),
      c: new T("float32", c, [batch, this.hidden]),
      h: new T("float32", h, [batch, this.embed]),
    });
    return { logits: out.logits.data, c: out.c_out.data, h: out.h_out.data };
  }

  /** The user's own words join the dictionary (on this device). */
  learn(text) {
    for (const w of wordsOf(this.tok, text)) this.userWords.add(w);
  }

  /** Normalized words of a text (keyboard_fl.text.words), for the personal cache. */
  words(text) {
    return wordsOf(this.tok, text);
  }

  accepts(word) {
    return this.publicWords.has(word) || this.userWords.has(word);
  }

  encodeContext(context) {
    const chunks = this.tok.chunks(context);
    if (this.chunkIds.size > 4096) this.chunkIds.clear();
    const ids = [BOS_ID];
    for (const ch of chunks) {
      let p = this.chunkIds.get(ch);
      if (!p) this.chunkIds.set(ch, (p = this.tok.encodeChunk(ch)));
      ids.push(...p);
    }
    return ids;
  }

  async contextState(ids) {
    let n = 0;
    while (n < Math.min(ids.length, this.ctxIds.length) && ids[n] === this.ctxIds[n]) n++;
    this.ctxIds.length = n;
    this.ctxStates.length = n;
    let c = n ? this.ctxStates[n - 1].c : new Float32Array(this.hidden);
    let h = n ? this.ctxStates[n - 1].h : new Float32Array(this.embed);
    for (const t of ids.slice(n)) {
      const out = await this.step(Int32Array.of(t), c, h, 1);
      c = out.c; h = out.h;
      this.ctxIds.push(t);
      this.ctxStates.push({ c, h, logits: out.logits });
    }
    return this.ctxStates[this.ctxStates.length - 1];
  }

  tablesFor(prefix) {
    let t = this.tables.get(prefix);
    if (!t) {
      if (this.tables.size >= 256) this.tables.delete(this.tables.keys().next().value);
      t = prefixTables(this.tok, prefix, this.search.max_prefix);
      this.tables.set(prefix, t);
    }
    return t;
  }

  /**
   * [[word, log P], …] (top k), as OnnxSuggester.suggest_scored; kind: "next" | "completion".
   * personal: a PersonalCache (personal.js) mixed in with weight λ (keyboard_fl.personal.CachedSuggester);
   * its words join the dictionary. Without it, userWords: whether this page's in-memory words do.
   */
  async suggestScored(text, k = 3, { userWords = true, personal = null, weight = WEIGHT } = {}) {
    const [context, prefix] = splitContext(this.tok, text);
    const kind = prefix ? "completion" : "next";
    if (Array.from(prefix).length > this.search.max_prefix) return { words: [], kind };
    const ctx = await this.contextState(this.encodeContext(context));
    const found = await wordSearch(
      this.step, this.boundary, ctx, this.tablesFor(prefix), Array.from(prefix).length, this.search.beam, this.search.depth,
    );
    if (personal) {
      const accepts = (w) => this.publicWords.has(w) || personal.has(w);
      const scored = collectWords(this.tok, found, Math.max(k, GLOBAL_K), prefix, accepts);
      const ws = wordsOf(this.tok, context);
      return { words: interpolate(scored, personal, ws.length ? ws[ws.length - 1] : BOS, prefix, weight, k), kind };
    }
    const accepts = userWords ? (w) => this.accepts(w) : (w) => this.publicWords.has(w);
    return { words: collectWords(this.tok, found, k, prefix, accepts), kind };
  }
}
