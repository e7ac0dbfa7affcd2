"""The files a browser needs beside the ONNX model: the tokenizer as JSON and the word list.

The demo page runs the whole keyboard in the page (``keyboard_fl/demo/static/ondevice/``):
it cannot read SentencePiece's protobuf, so the export also writes
``tokenizer.json`` — every piece with its unigram log-probability (score), its
SentencePiece type and its whole-word kind — from which the page encodes text
with the unigram model's Viterbi segmentation (Kudo 2018), exactly as
SentencePiece does, and ``words.txt``, the dictionary that keeps non-words off
the strip (:mod:`keyboard_fl.dictionary`).

Normalization (NFKC + casefold, :func:`keyboard_fl.text.normalize`) has no exact
JavaScript twin: ``String.normalize("NFKC")`` is, ``toLowerCase`` is not
``casefold`` (``ß`` → ``ss``, final sigma, …). The JSON therefore carries the
casefold mapping of every code point that it changes, so the page folds case
character by character exactly as Python does.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from keyboard_fl.tokenizer import Tokenizer

TOKENIZER_JSON_NAME = "tokenizer.json"
FORMAT = "keyboard_fl.unigram/1"
# SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@functools.lru_cache(maxsize=1)
def casefold_table() -> dict[str, str]:
    """``{char: char.casefold()}`` for every code point that casefolding changes."""
    table = {}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        folded = ch.casefold()
        if folded != ch:
            table[ch] = folded
    return table


def _piece_type(sp, i: int) -> int:
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_unused(i):
        return UNUSED
    if sp.is_byte(i):
        return BYTE
    return NORMAL


def tokenizer_json(tokenizer: Tokenizer) -> dict:
    """A JSON-ready description of a unigram SentencePiece model for the in-page encoder."""
    sp = tokenizer.sp
    n = sp.vocab_size()
    types = [_piece_type(sp, i) for i in range(n)]
    unk = [i for i, t in enumerate(types) if t == UNKNOWN]
    if len(unk) != 1:
        raise ValueError(f"tokenizer: expected exactly one <unk> piece, found {len(unk)}")
    return {
        "format": FORMAT,
        "pieces": list(tokenizer.pieces),
        "scores": [float(sp.get_score(i)) for i in range(n)],  # float32 values, exactly representable
        "types": types,
        "kinds": [int(k) for k in tokenizer.piece_kinds],  # tokenizer.WORD_START / CONTINUATION / BOUNDARY
        "unk_id": unk[0],
        "add_dummy_prefix": True,  # SentencePiece's default, kept by train_tokenizer
        "casefold": casefold_table(),
    }


def write_tokenizer_json(tokenizer: Tokenizer, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(tokenizer_json(tokenizer), ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)


__all__ = ["TOKENIZER_JSON_NAME", "casefold_table", "tokenizer_json", "write_tokenizer_json"]
