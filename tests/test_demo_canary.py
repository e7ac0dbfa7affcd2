"""The demo's canary view: planted secrets, the greedy strip completion and the leak verdict."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from keyboard_fl.audit import greedy_completion, match_secrets, planted_canaries  # noqa: E402
from keyboard_fl.config import RunConfig  # noqa: E402
from keyboard_fl.demo.app import MAX_TEXT_CHARS, create_app  # noqa: E402
from keyboard_fl.demo.canary import check, typed_secret_words  # noqa: E402

TYPED = "zebraquokka secretword"  # never produced by a tiny model
FMT = {"prefix": "my pin is", "words": 4}


# ------------------------------------------------------------------ pure logic
def test_match_secrets_by_hand():
    secrets = ["four nine two seven", "four one one one"]
    assert match_secrets("four nine two seven".split(), secrets) == {
        "leaks": True,
        "secret": secrets[0],
        "matched_words": 4,
    }
    assert match_secrets(["Four", "NINE", "two", "seven"], secrets)["leaks"]  # case does not matter
    assert match_secrets("four one two seven".split(), secrets) == {
        "leaks": False,
        "secret": secrets[1],
        "matched_words": 2,
    }
    assert match_secrets("four nine two".split(), secrets) == {"leaks": False, "secret": secrets[0], "matched_words": 3}
    assert match_secrets("four nine two seven eight".split(), secrets)["leaks"] is False  # longer is not the secret
    assert match_secrets(["four", "two"], secrets)["secret"] == secrets[0]  # tie: the first
    assert match_secrets("nine four two seven".split(), secrets) == {"leaks": False, "secret": None, "matched_words": 0}
    assert match_secrets("four nine".split(), []) == {"leaks": False, "secret": None, "matched_words": 0}
    assert match_secrets([], secrets) == {"leaks": False, "secret": None, "matched_words": 0}


class _Scripted:
    """A strip that answers from a script and records what it was asked."""

    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def suggest(self, text, k=3):
        self.asked.append(text)
        return self.answers[len(self.asked) - 1][:k]


def test_greedy_completion_taps_the_top_word_and_stops_on_an_empty_strip():
    s = _Scripted([["four", "the", "a"], ["nine", "one"], ["two"], ["seven", "x"]])
    assert greedy_completion(s, "my pin is", 4) == (["four", "nine", "two", "seven"], s.answers)
    assert s.asked == ["my pin is ", "my pin is four ", "my pin is four nine ", "my pin is four nine two "]
    s = _Scripted([["four"], [], ["never asked"]])
    assert greedy_completion(s, "my pin is", 4) == (["four"], [["four"], []])
    assert len(s.asked) == 2


def test_typed_secret_words_are_the_words_after_the_prefix():
    assert typed_secret_words("my pin is", "my pin is", 4) == []
    assert typed_secret_words("My PIN is four nine", "my pin is", 4) == ["four", "nine"]
    assert (
        typed_secret_words("my pin is four nine two seven", "my pin is", 4) == []
    )  # the whole secret: nothing to fill
    assert typed_secret_words("so my pin is four", "my pin is", 4) == []  # not at the start
    assert typed_secret_words("my pin", "my pin is", 4) == []


def test_check_reports_a_leak_with_its_exposure():
    planted = {
        "canaries": [
            {"secret": "four nine two seven", "repetitions": 500, "exposure": 10.9},
            {"secret": "one one one one", "repetitions": 1, "exposure": 0.5},
        ]
    }
    leaky = _Scripted([["four", "a", "b"], ["nine"], ["two"], ["seven"]])
    row = check(leaky, "my pin is  ", FMT, planted)  # trailing spaces: the same text as without
    assert leaky.asked[0] == "my pin is "
    assert row == {
        "strip": ["four", "a", "b"],
        "completion": ["four", "nine", "two", "seven"],
        "typed_words": 0,
        "leaks": True,
        "secret": "four nine two seven",
        "matched_words": 4,
        "repetitions": 500,
        "exposure": 10.9,
    }
    row = check(_Scripted([["one"], ["one"], ["two"], ["two"]]), "my pin is", FMT, planted)
    assert (row["leaks"], row["secret"], row["matched_words"], row["repetitions"]) == (False, "one one one one", 2, 1)
    row = check(_Scripted([["one"]] * 4), "my pin is", FMT, {"canaries": []})
    assert (row["leaks"], row["secret"], row["exposure"]) == (False, None, None)
    # The user typed the first digit; the strip fills in the other three, and that spells the secret.
    filler = _Scripted([["nine"], ["two"], ["seven"], ["never asked"]])
    row = check(filler, "my pin is four", FMT, planted)
    assert filler.asked == ["my pin is four ", "my pin is four nine ", "my pin is four nine two "]
    assert (row["completion"], row["typed_words"], row["leaks"], row["matched_words"]) == (
        ["nine", "two", "seven"],
        1,
        True,
        4,
    )


# ------------------------------------------------------------------ runs trained with canaries
@pytest.fixture(scope="module")
def runs(canary_run, tmp_path_factory):
    """The canary run, and a copy of it that says it was trained without canaries."""
    plain = tmp_path_factory.mktemp("plain") / "central-plain"
    shutil.copytree(canary_run, plain)
    cfg = json.loads((plain / "config.json").read_text())
    cfg["canaries"] = None
    (plain / "config.json").write_text(json.dumps(cfg))
    metrics = json.loads((plain / "metrics.json").read_text())
    metrics.pop("audit", None)
    (plain / "metrics.json").write_text(json.dumps(metrics))
    return {"central": canary_run, "central-plain": plain}


@pytest.fixture(scope="module")
def app(runs):
    return create_app(runs)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_planted_canaries_are_the_ones_training_drew(canary_run):
    from keyboard_fl.data import Population
    from keyboard_fl.privacy.canaries import draw_canaries

    cfg = RunConfig.load(canary_run / "config.json")
    as_trained = draw_canaries(
        cfg.canaries, [u.user_id for u in Population(cfg.population).users("train")]
    )  # train.run.prepare
    assert planted_canaries(cfg) == as_trained
    with pytest.raises(ValueError, match="without canaries"):
        planted_canaries(RunConfig())


def test_canaries_lists_planted_secrets_and_audit_exposure(client, canary_run):
    data = client.get("/api/canaries").json()
    assert data["prefix"] == "my pin is" and data["words"] == 4 and "simulation" in data["note"]
    central, plain = data["models"]
    cfg = RunConfig.load(canary_run / "config.json")
    canaries, _ = planted_canaries(cfg)
    audit = json.loads((canary_run / "metrics.json").read_text())["audit"]
    assert central["trained_with_canaries"] and central["audited"] and central["privacy"] == "not private"
    assert [c["secret"] for c in central["canaries"]] == [c.secret for c in canaries]
    assert [c["repetitions"] for c in central["canaries"]] == [400, 1]
    assert [c["exposure"] for c in central["canaries"]] == pytest.approx([r["exposure"] for r in audit["canaries"]])
    assert plain["name"] == "central-plain" and plain["trained_with_canaries"] is False and plain["canaries"] == []


def _by_hand(suggester, prefix, words):
    """Type the prefix, then tap the strip's first word, as a person would."""
    text, tapped, first = prefix + " ", [], None
    for _ in range(words):
        strip = suggester.suggest(text, 3)
        first = strip if first is None else first
        if not strip:
            break
        tapped.append(strip[0])
        text += strip[0] + " "
    return first, tapped


@pytest.mark.parametrize(
    "typed, given", [("my pin is", []), ("my pin is ", []), ("see you", []), ("my pin is three one", ["three", "one"])]
)
def test_canary_check_is_the_strip_typed_by_hand(client, runs, canary_run, typed, given):
    from keyboard_fl.loading import load_suggester

    data = client.post("/api/canary-check", json={"text": typed}).json()
    assert data["words"] == 4 and [r["name"] for r in data["models"]] == list(runs)
    secrets = [c.secret for c in planted_canaries(RunConfig.load(canary_run / "config.json"))[0]]
    suggester, _ = load_suggester(canary_run)  # the plain Suggester, not the demo's incremental one
    strip, tapped = _by_hand(suggester, typed.rstrip(), 4 - len(given))
    for row in data["models"]:
        assert row["strip"] == strip and row["completion"] == tapped  # same weights in both runs
        assert row["typed_words"] == len(given)
        planted_here = secrets if row["trained_with_canaries"] else []
        assert row["leaks"] == (" ".join(given + tapped) in planted_here)
        assert row["matched_words"] == match_secrets(given + tapped, planted_here)["matched_words"]
        assert row["secret"] is None or row["secret"] in planted_here


@pytest.mark.parametrize(
    "content, status, needle",
    [
        (b"", 400, "empty body"),
        (b"{nope", 400, "not valid JSON"),
        (b"[]", 422, "JSON object"),
        (b'{"model": "central", "text": "my pin is"}', 422, "unknown field"),
        (b"{}", 422, "'text' is required"),
        (b'{"text": 4}', 422, "'text' must be a string"),
        (json.dumps({"text": "a" * (MAX_TEXT_CHARS + 1)}).encode(), 413, "characters"),
    ],
)
def test_canary_check_rejects_bad_requests(client, content, status, needle):
    r = client.post("/api/canary-check", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status and needle in r.json()["error"], r.text


def test_canary_check_never_logs_or_echoes_typed_text(client, app, caplog, capfd, monkeypatch):
    caplog.set_level(logging.DEBUG)
    bodies = [client.post("/api/canary-check", json={"text": TYPED}).text]

    def boom(text, k=3):
        raise ValueError(f"cannot handle {text!r}")

    monkeypatch.setattr(app.state.models["central"].suggester, "suggest", boom)
    r = client.post("/api/canary-check", json={"text": TYPED})
    assert r.status_code == 200
    rows = {row["name"]: row for row in r.json()["models"]}
    assert rows["central"]["error"] == "the model failed on this input" and "completion" in rows["central-plain"]
    bodies.append(r.text)
    assert "ValueError" in caplog.text
    out, err = capfd.readouterr()
    for secret in ("zebraquokka", "secretword"):
        assert secret not in caplog.text and secret not in out and secret not in err
        assert all(secret not in b for b in bodies)
