"""Keystroke savings on hand-worked messages with scripted suggestion strips."""

import pytest

from keyboard_fl.eval.ksr import keystroke_savings, type_message

MSG = "Hi there, how are you"  # 21 chars; targets hi there how are you


def oracle(message):
    from keyboard_fl import text

    starts = {t.start: t.word for t in text.targets(message)}
    norm = text.normalize(message)

    def suggest(so_far):
        # the word being typed: the target whose span contains len(so_far)
        for s, w in starts.items():
            if s <= len(so_far) < s + len(w):
                assert norm.startswith(so_far)
                return ["nope", w]
        raise AssertionError(f"called outside a target at {len(so_far)}")

    return suggest


def test_perfect_oracle():
    r = type_message(MSG, oracle(MSG))
    # hi+space: 1; there: 1 (',' not consumed) + ',' + ' ': 3; how+space, are+space, you: 3.
    assert r == {
        "keystrokes": 7,
        "characters": 21,
        "ksr": pytest.approx(1 - 7 / 21),
        "accepted_words": 5,
        "suggest_calls": 5,
    }


def test_never_right_is_zero():
    calls = []
    r = type_message(MSG, lambda s: calls.append(s) or ["x", "y", "z"])
    assert r["keystrokes"] == 21 and r["ksr"] == 0.0 and r["accepted_words"] == 0
    # called at each character of the target words only (2+5+3+3+3), never on spaces/punctuation
    assert r["suggest_calls"] == len(calls) == 16
    assert [len(s) for s in calls] == [0, 1, 3, 4, 5, 6, 7, 10, 11, 12, 14, 15, 16, 18, 19, 20]


def test_mixed_by_hand():
    def suggest(so_far):
        if so_far.endswith("th"):
            return ["the", "there", "this"]
        if so_far.endswith(" "):
            return ["how", "what", "a"]
        return []

    r = type_message(MSG, suggest)
    # h i ␣ t h [there] , ␣ [how+␣] a r e ␣ y o u = 16 keystrokes, 2 accepted
    assert r["keystrokes"] == 16 and r["accepted_words"] == 2
    assert r["ksr"] == pytest.approx(5 / 21)
    assert r["suggest_calls"] == 2 + 3 + 1 + 3 + 3


def test_only_first_k_suggestions_count():
    r = type_message("go", lambda s: ["a", "b", "c", "go"])
    assert r["keystrokes"] == 2 and r["accepted_words"] == 0
    assert type_message("go", lambda s: ["a", "b", "c", "go"], k=4)["keystrokes"] == 1


def test_non_targets_and_aggregate():
    # "(hi" is glued to punctuation: not a target, never suggested; "yo" after a space is.
    calls = []
    r = keystroke_savings(["(hi yo", "", "yo yo"], lambda s: calls.append(s) or ["yo"])
    assert calls == ["(hi ", "", "yo "]
    per = r["per_message"]
    assert [p["keystrokes"] for p in per] == [5, 0, 2]
    assert per[1]["characters"] == 0
    assert r["characters"] == 6 + 0 + 5 and r["keystrokes"] == 7
    assert r["ksr"] == pytest.approx(1 - 7 / 11)
    assert r["accepted_words"] == 3 and r["messages"] == 3


def test_normalized_text_is_typed():
    # NFKC + casefold: "ＨＩ" becomes "hi"; the strip sees normalized text.
    seen = []
    type_message("ＨＩ You", lambda s: seen.append(s) or ["you"])
    assert seen == ["", "h", "hi "]
