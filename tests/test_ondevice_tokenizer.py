"""The page's tokenizer and dictionary, against Python's: SentencePiece parity in node, word lists, export files.

``keyboard_fl/demo/static/ondevice/tokenizer.js`` (unigram Viterbi over the
export's ``tokenizer.json``) must give the very pieces Python's sentencepiece
gives, and ``search.js``'s context split must equal :func:`keyboard_fl.strip.split_context`,
on held-out messages and on awkward Unicode. Runs the real module in node 20.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keyboard_fl import text as text_lib
from keyboard_fl.dictionary import Dictionary, public_vocabulary, run_word_list
from keyboard_fl.strip import split_context

STATIC = Path(__file__).parents[1] / "keyboard_fl/demo/static/ondevice"
ODD = [
    "",
    "   ",
    "Straße ΣΑΣ ﬁne",
    "日本語 テキスト",
    "emoji 😀👍🏽 ok",
    "tab\there\nnew",
    "İstanbul ǅ ĳ ﬀ",
    "don't  'quote' x_y",
    "ＦＵＬＬ width",
    "a\u00a0b\u2003c\u3000d",
    "é vs e\u0301",
    "½ ① ² ⅷ",
    "zzzzqqqxx",
    "can'",
    "rock'n'roll ",
    "see you ",
    "see you to",
    "...",
    "hi!",
    "i'm",
    "\u200b zero width",
    "ǲ DŽ",
]
NODE_SCRIPT = """
import { readFileSync } from "fs";
import { Unigram } from "%s/tokenizer.js";
import { splitContext } from "%s/search.js";
const tok = new Unigram(JSON.parse(readFileSync(process.argv[2], "utf8")));
const texts = JSON.parse(readFileSync(0, "utf8"));
const encode = (t) => tok.chunks(t).map((c) => tok.encodeChunk(c));
process.stdout.write(JSON.stringify(texts.map((t) => [tok.normalize(t), encode(t), splitContext(tok, t)])));
"""


@pytest.fixture(scope="module")
def export_dir(tiny_runs, tmp_path_factory):
    from keyboard_fl.export import export_run

    out = tmp_path_factory.mktemp("web_export")
    export_run(tiny_runs["dp-fedavg"], out)
    return out


def _node_results(export_dir: Path, texts: list[str], tmp_path: Path):
    node = shutil.which("node")
    if node is None:
        if os.environ.get("KEYBOARD_FL_REQUIRE_BROWSER") == "1":
            pytest.fail("node is missing (apt-get install nodejs)")
        pytest.skip("node is missing")
    script = tmp_path / "parity.mjs"
    script.write_text(NODE_SCRIPT % (STATIC.as_posix(), STATIC.as_posix()))
    out = subprocess.run(
        [node, str(script), str(export_dir / "tokenizer.json")],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def test_in_page_tokenizer_equals_sentencepiece(export_dir, tiny_runs, tmp_path):
    from test_demo_ondevice import heldout_prefixes

    from keyboard_fl.tokenizer import Tokenizer

    tok = Tokenizer.load(export_dir / "tokenizer.model")
    texts = ODD + heldout_prefixes(tiny_runs["dp-fedavg"], 1200, seed=3)
    got = _node_results(export_dir, texts, tmp_path)
    bad = []
    for t, (norm, chunks, split) in zip(texts, got, strict=False):
        want = ([list(c) for c in tok.encode_chunks(t)], text_lib.normalize(t), list(split_context(t)))
        if (chunks, norm, split) != want:
            bad.append((t, (chunks, norm, split), want))
    assert not bad, f"{len(bad)}/{len(texts)} differ, e.g. {bad[:3]}"
    assert sum(1 for _, chunks, _ in got for c in chunks for i in c if i == 1) > 0  # <unk> runs were exercised


def test_export_writes_the_page_files(export_dir, tiny_runs):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert {"tokenizer.json", "words.txt"} <= set(manifest["files"])
    spec = json.loads((export_dir / "tokenizer.json").read_text())
    assert spec["format"] == "keyboard_fl.unigram/1" and spec["casefold"]["ß"] == "ss"
    assert len(spec["pieces"]) == len(spec["scores"]) == len(spec["types"]) == manifest["vocab_size"]
    words = (export_dir / "words.txt").read_text().split()
    assert words == run_word_list(tiny_runs["dp-fedavg"]) and 100 < len(words) <= 10_000


def test_public_vocabulary_is_the_most_frequent_words():
    msgs = ["The cat, the DOG", "the cat sat", "don't stop"]
    assert public_vocabulary(msgs, 2) == ["the", "cat"]
    assert public_vocabulary(msgs)[:2] == ["the", "cat"] and "don't" in public_vocabulary(msgs)


def test_dictionary_user_words_and_bad_files(tmp_path):
    d = Dictionary(frozenset({"see", "you"}))
    assert "see" in d and "ises" not in d and 3 not in d
    d2 = d.with_user_text("Zorblax says hi")
    assert "zorblax" in d2 and "hi" in d2 and "zorblax" not in d  # the user's words, added on a copy
    path = tmp_path / "words.txt"
    path.write_text("see\nyou\nNot Normal\n")
    with pytest.raises(ValueError, match=r"words.txt:3: not a normalized word"):
        Dictionary.load(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        Dictionary.load(path)
    with pytest.raises(FileNotFoundError, match="word list not found"):
        Dictionary.load(tmp_path / "missing.txt")
