"""Word suggestions from an exported ONNX step model, with onnxruntime and numpy only.

:class:`OnnxSuggester` mirrors :class:`keyboard_fl.suggest.Suggester`: the same
context split, the same piece search as :func:`keyboard_fl.suggest.word_search`
(word-start pieces first, then continuation pieces; a word ends when the next
piece is not a continuation, ``Tokenizer.ends_word``; prefix-constrained
completions through :func:`keyboard_fl.strip.prefix_tables`) and the same merge
of segmentations (:func:`keyboard_fl.strip.collect_words`). Nothing here runs JAX.

The model state after a context is cached per piece, so typing one more
character re-reads only the pieces that changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keyboard_fl import text as text_lib
from keyboard_fl.dictionary import WORDS_NAME, Dictionary
from keyboard_fl.export.onnx_export import FLOAT_NAME, INT8_NAME, TOKENIZER_NAME, read_manifest
from keyboard_fl.strip import SearchConfig, collect_words, prefix_tables, split_context
from keyboard_fl.suggester import StripMixin
from keyboard_fl.tokenizer import BOS_ID, Tokenizer

NEG_INF = np.float32(-1e30)


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return (y - np.log(np.exp(y).sum(axis=-1, keepdims=True))).astype(np.float32)


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis).astype(np.float32)


def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest k of a 1-D array, sorted, ties to the lower index (as ``lax.top_k``)."""
    if x.size > k:
        kth = np.partition(x, x.size - k)[x.size - k]
        cand = np.flatnonzero(x >= kth)  # everything that can make the cut, ties included
    else:
        cand = np.arange(x.size)
    idx = cand[np.lexsort((cand, -x[cand]))[:k]]
    return x[idx], idx.astype(np.int64)


class OnnxSuggester(StripMixin):
    """Top-k word suggestions from ``export_dir`` (``model.onnx`` or ``model.int8.onnx``)."""

    def __init__(self, export_dir, int8: bool = False, *, threads: int = 1, search=None, dictionary=None):
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.manifest = read_manifest(self.export_dir)  # checks every file's sha256: a damaged export is refused
        self.tokenizer = Tokenizer.load(self.export_dir / TOKENIZER_NAME)
        self.config = search or SearchConfig(**self.manifest.get("search", {}))
        if dictionary is None and (self.export_dir / WORDS_NAME).is_file():
            dictionary = Dictionary.load(self.export_dir / WORDS_NAME)
        self.dictionary = dictionary  # only real words reach the strip (None: no filter, an old export)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        path = self.export_dir / (INT8_NAME if int8 else FLOAT_NAME)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.hidden_dim, self.embed_dim = int(self.manifest["hidden_dim"]), int(self.manifest["embed_dim"])
        self.boundary = np.asarray(self.tokenizer.ends_word, bool)
        self._tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._chunk_ids: dict[str, list[int]] = {}
        self._ctx_ids: list[int] = []
        self._ctx_states: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (c, h, logits) after each id

    # --- model ---------------------------------------------------------------

    def step(self, tokens: np.ndarray, c: np.ndarray, h: np.ndarray):
        """One model step: (logits [B,V], c [B,H], h [B,E])."""
        return self.session.run(None, {"token": np.asarray(tokens, np.int32).reshape(-1), "c": c, "h": h})

    def initial_state(self, batch: int = 1):
        return np.zeros((batch, self.hidden_dim), np.float32), np.zeros((batch, self.embed_dim), np.float32)

    def ids_state(self, ids: list[int]):
        """(c, h, logits) after reading ``ids`` (reusing the longest cached prefix)."""
        ids = list(ids) or [BOS_ID]
        n = 0
        while n < min(len(ids), len(self._ctx_ids)) and ids[n] == self._ctx_ids[n]:
            n += 1
        self._ctx_ids, self._ctx_states = self._ctx_ids[:n], self._ctx_states[:n]
        c, h = self._ctx_states[-1][:2] if n else self.initial_state(1)
        for t in ids[n:]:
            logits, c, h = self.step(np.array([t]), c, h)
            self._ctx_ids.append(t)
            self._ctx_states.append((c, h, logits))
        return self._ctx_states[-1]

    # --- search --------------------------------------------------------------

    def encode_context(self, context: str) -> list[int]:
        """``Tokenizer.encode(context, eos=False)``, with each whitespace chunk's pieces cached.

        SentencePiece encodes chunks independently, so the concatenation is the same;
        while a word is being typed the context does not change and nothing is encoded.
        """
        chunks = text_lib.normalize(context).split()
        missing = [ch for ch in dict.fromkeys(chunks) if ch not in self._chunk_ids]
        if missing:
            if len(self._chunk_ids) > 4096:
                self._chunk_ids.clear()
            for ch, pieces in zip(missing, self.tokenizer.encode_list(missing)):
                self._chunk_ids[ch] = list(pieces)
        ids = [BOS_ID]
        for ch in chunks:
            ids.extend(self._chunk_ids[ch])
        return ids

    def tables_for(self, prefix: str):
        """``(allowed, advance)`` tables of a typed prefix (cached, bounded)."""
        if prefix not in self._tables:
            if len(self._tables) >= 256:
                self._tables.pop(next(iter(self._tables)))
            self._tables[prefix] = prefix_tables(self.tokenizer, prefix, self.config.max_prefix)
        return self._tables[prefix]

    def word_search(self, c, h, first_logits, allowed, advance, prefix_len: int):
        """numpy twin of :func:`keyboard_fl.suggest.word_search` for one context.

        Returns pieces [depth, beam, depth] and scores [depth, beam] (−inf: not a complete word).
        """
        beam, depth = self.config.beam, self.config.depth
        v = first_logits.shape[-1]
        lp = log_softmax(first_logits[0])
        score, piece = top_k(np.where(allowed[0], lp, NEG_INF), beam)  # [W]
        ell = np.minimum(advance[piece], prefix_len)
        seq = np.zeros((beam, depth), np.int64)
        seq[:, 0] = piece
        c, h = np.repeat(c, beam, axis=0), np.repeat(h, beam, axis=0)
        all_pieces, all_scores = [], []
        for d in range(depth):
            logits, c, h = self.step(piece, c, h)
            lp = log_softmax(logits)  # [W, V]
            end = logsumexp(np.where(self.boundary, lp, NEG_INF), axis=-1)
            done = (ell == prefix_len) & (score > NEG_INF / 2)
            all_pieces.append(seq.copy())
            all_scores.append(np.where(done, score + end, -np.inf).astype(np.float32))
            if d == depth - 1:
                break
            ok = allowed[1 + ell]  # [W, V]
            ext = np.where(ok, score[:, None] + lp, NEG_INF).reshape(beam * v)
            score, flat = top_k(ext, beam)
            parent, piece = flat // v, flat % v
            ell = np.minimum(ell[parent] + advance[piece], prefix_len)
            seq = seq[parent]
            seq[:, d + 1] = piece
            c, h = c[parent], h[parent]
        return np.stack(all_pieces), np.stack(all_scores)

    # --- the Suggester protocol (keyboard_fl.suggester) -----------------------

    split_context = staticmethod(split_context)

    def context_state(self, context: str):
        """(c, h, logits) after the context's pieces."""
        return self.ids_state(self.encode_context(context))

    def suggest_from(self, state, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        if len(prefix) > self.config.max_prefix:
            return []
        c, h, logits = state
        allowed, advance = self.tables_for(prefix)
        pieces, scores = self.word_search(c, h, logits, allowed, advance, len(prefix))
        return collect_words(self.tokenizer, pieces, scores, k, prefix, self.dictionary)


__all__ = ["OnnxSuggester", "log_softmax", "logsumexp", "top_k"]
