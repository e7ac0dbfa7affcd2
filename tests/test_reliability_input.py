"""Bad input end to end: corpora and configs through the CLI give one clear line (exit 2), never a traceback;
the tokenizer survives arbitrary Unicode.

Already covered elsewhere, not repeated here: the clipping bound property
(test_privacy_clipping), `Suggester.suggest` on arbitrary Unicode (test_suggest),
the corpus readers' reasons and line numbers (test_data_corpus), unknown config
keys and negative clip norms in `RunConfig.from_dict` (test_config).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from keyboard_fl.cli import app
from keyboard_fl.config import RunConfig

runner = CliRunner()


def _user_error(res, *needles):
    try:
        text = res.stderr.strip()
    except ValueError:  # older click: stderr mixed into output
        text = res.output.strip()
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output and "Traceback" not in text
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text
    return text


def _train(tmp_path, *args):
    return runner.invoke(
        app, ["train", "--preset", "tiny", "--out", str(tmp_path / "run"), *map(str, args)], catch_exceptions=False
    )


def _good_lines(n=30):
    return [json.dumps({"user_id": f"u{i % 7}", "text": f"message number {i} from a user"}).encode() for i in range(n)]


def _jsonl(tmp_path, lines: list[bytes], name="corpus.jsonl"):
    p = tmp_path / name
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


# --- corpora through `keyboard-fl train --corpus` ----------------------------------


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b'{"user_id": "u1", "text": "caf\xe9 au lait"}', "invalid_utf8"),
        (b'{"user_id": "u1", "text": "broken', "invalid_json"),
        (b'{"user_id": "u1", "text": ""}', "empty_text"),
        (b'{"user_id": "", "text": "who am i"}', "bad_user_id"),
        (b'{"user_id": "u1", "text": "' + b"a" * 200_000 + b'"}', "line_too_long"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "invalid_utf8"),
    ],
)
def test_bad_corpus_line_is_one_line_naming_file_and_line(tmp_path, bad, reason):
    lines = _good_lines()
    lines.insert(11, bad)
    p = _jsonl(tmp_path, lines)
    text = _user_error(_train(tmp_path, "--corpus", p), reason)
    assert f"{p}:12:" in text


def test_binary_file_as_corpus(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 8)
    text = _user_error(_train(tmp_path, "--corpus", p))
    assert str(p) in text


def test_binary_file_in_a_corpus_directory(tmp_path):
    d = tmp_path / "users"
    d.mkdir()
    from keyboard_fl.data import SplitConfig, assign_split

    (d / "alice.txt").write_text("hello there\nsee you soon\n")
    # a name whose user lands in the public split, which is read first (for the tokenizer)
    name = next(f"photo{i}" for i in range(1000) if assign_split(f"photo{i}", SplitConfig(seed=0)) == "public")
    (d / f"{name}.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")
    _user_error(_train(tmp_path, "--corpus", d), f"{name}.jpg", "binary_file")


@pytest.mark.parametrize("content", [b"", b"\n\n\n"])
def test_empty_corpus_is_a_user_error(tmp_path, content):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(content)
    _user_error(_train(tmp_path, "--corpus", p))


# --- configuration: the cases test_config / test_cli do not already cover ----------


@pytest.mark.parametrize(
    "d, where",
    [
        ({"federated": {"target_epsilon": 0}}, r"config\.federated: .*target_epsilon"),
        ({"federated": {"target_epsilon": -2.5}}, r"config\.federated: .*target_epsilon"),
        ({"federated": {"rounds": "ten"}}, r"config\.federated: .*rounds"),
        ({"federated": {"delta": 2}}, r"config\.federated: .*delta"),
        ({"federated": {"clients_per_round": float("inf")}}, r"config\.federated: .*clients_per_round"),
        ({"federated": {"unknown_knob": 1, "rounds": 3}}, r"config\.federated: unknown key\(s\) unknown_knob"),
    ],
)
def test_run_config_bad_values_name_the_path(d, where):
    with pytest.raises(ValueError, match=where):
        RunConfig.from_dict(d)


def test_sampling_probability_above_one_from_a_config_file(tmp_path):
    """q = clients_per_round / N > 1 is caught before training, with the numbers in the message."""
    from keyboard_fl.train.federated import resolve_dp

    cfg = RunConfig.from_dict({"federated": {"clients_per_round": 500}})
    with pytest.raises(ValueError, match=r"clients_per_round=500 needs q = 1\.667"):
        resolve_dp(cfg.federated, 300, private=True)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--rounds", "0"], "rounds"),
        (["--noise-multiplier", "-1"], "noise_multiplier"),
        (["--clients-per-round", "0"], "clients_per_round"),
        (["--target-epsilon", "-3"], "target_epsilon"),
    ],
)
def test_cli_bad_numbers_exit_2(tmp_path, args, needle):
    _user_error(_train(tmp_path, *args), needle)


# --- the tokenizer on arbitrary Unicode ------------------------------------------------


@pytest.fixture(scope="module")
def tok(tiny_runs):
    from keyboard_fl.tokenizer import Tokenizer

    return Tokenizer.load(tiny_runs["dp-fedavg"] / "tokenizer.model")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(max_size=80))
def test_tokenizer_round_trip_on_arbitrary_unicode(tok, message):
    from keyboard_fl import text as text_lib
    from keyboard_fl.tokenizer import BOS_ID, EOS_ID, UNK_ID

    ids = tok.encode(message)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert all(0 <= i < tok.vocab_size for i in ids)
    decoded = tok.decode(ids)
    assert isinstance(decoded, str)
    if UNK_ID not in ids:
        assert decoded == " ".join(text_lib.normalize(message).split())
    ids2, targets = tok.encode_with_targets(message)
    assert ids2 == ids and all(0 < p < len(ids) for p, _ in targets)
