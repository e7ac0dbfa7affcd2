// The keyboard's memory of its user, in this browser only: keyboard_fl.personal.cache.
// A word and word-pair cache of the messages sent from this page, kept in
// localStorage (never sent anywhere), mixed with the global model's word
// probabilities:
//   P_cache(w | v) = (c(v, w) + α · c(w) / N) / (c(v) + α)
//   P(w | ctx)     = (1 − λ) · P_global(w | ctx) + λ · P_cache(w | v)
// v: the previous word ("<s>" at the start of a message). Same numbers as Python's NgramCache.

export const BOS = "<s>";
export const ALPHA = 1.0; // keyboard_fl.personal.CacheConfig.alpha
export const WEIGHT = 0.2; // keyboard_fl.personal.CacheConfig.weight (λ; the evaluation validates it per user)
export const GLOBAL_K = 8; // keyboard_fl.personal.CacheConfig.global_k
export const STORAGE_KEY = "keyboard_fl.personal.v1";

export class PersonalCache {
  constructor(alpha = ALPHA) {
    this.alpha = alpha;
    this.reset();
  }

  reset() {
    this.unigrams = new Map();
    this.bigrams = new Map(); // previous word → Map(word → count)
    this.total = 0;
  }

  get size() {
    return this.unigrams.size;
  }

  has(word) {
    return this.unigrams.has(word);
  }

  /** Count the words of one sent message (`words`: keyboard_fl.text.words of it) and their pairs. */
  learnWords(words) {
    let prev = BOS;
    for (const w of words) {
      this.unigrams.set(w, (this.unigrams.get(w) || 0) + 1);
      let following = this.bigrams.get(prev);
      if (!following) this.bigrams.set(prev, (following = new Map()));
      following.set(w, (following.get(w) || 0) + 1);
      this.total += 1;
      prev = w;
    }
  }

  prob(word, prev) {
    if (!this.total) return 0;
    const following = this.bigrams.get(prev);
    let pair = 0, seen = 0;
    if (following) {
      pair = following.get(word) || 0;
      for (const c of following.values()) seen += c;
    }
    return (pair + (this.alpha * (this.unigrams.get(word) || 0)) / this.total) / (seen + this.alpha);
  }

  /** Map(word → P_cache(word | prev)) of the cached words that start with `prefix`. */
  candidates(prev, prefix = "") {
    const out = new Map();
    for (const w of this.unigrams.keys()) if (w.startsWith(prefix)) out.set(w, this.prob(w, prev));
    return out;
  }

  toJSON() {
    return {
      format: STORAGE_KEY,
      unigrams: Object.fromEntries(this.unigrams),
      bigrams: Object.fromEntries([...this.bigrams].map(([v, m]) => [v, Object.fromEntries(m)])),
      total: this.total,
    };
  }

  static fromJSON(obj) {
    const c = new PersonalCache();
    if (!obj || obj.format !== STORAGE_KEY) return c;
    c.unigrams = new Map(Object.entries(obj.unigrams || {}));
    c.bigrams = new Map(Object.entries(obj.bigrams || {}).map(([v, m]) => [v, new Map(Object.entries(m))]));
    c.total = Number(obj.total) || 0;
    return c;
  }

  /** The cache of this browser (localStorage), or an empty one. */
  static load(storage = globalThis.localStorage) {
    try {
      return PersonalCache.fromJSON(JSON.parse(storage.getItem(STORAGE_KEY) || "null"));
    } catch (e) {
      return new PersonalCache();
    }
  }

  save(storage = globalThis.localStorage) {
    storage.setItem(STORAGE_KEY, JSON.stringify(this));
  }

  /** Forget everything: the stored state is removed from this browser. */
  clear(storage = globalThis.localStorage) {
    this.reset();
    storage.removeItem(STORAGE_KEY);
  }
}

/** keyboard_fl.personal.cache.interpolate: top k of the mixture as [[word, log P], …]. */
export function interpolate(globalScored, cache, prev, prefix, weight = WEIGHT, k = 3) {
  const mixed = new Map(globalScored.map(([w, lp]) => [w, (1 - weight) * Math.exp(lp)]));
  if (weight > 0) for (const [w, p] of cache.candidates(prev, prefix)) mixed.set(w, (mixed.get(w) || 0) + weight * p);
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return [...mixed.entries()]
    .filter(([, p]) => p > 0)
    .map(([w, p]) => [w, Math.log(p)])
    .sort((a, b) => b[1] - a[1] || cmp(a[0], b[0]))
    .slice(0, k);
}
