"""Two registers: public text lacks the chat register, communities, trends; names stay single-user."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter

import pytest

from keyboard_fl.data import Population, PopulationConfig
from keyboard_fl.data.register import active_trends, chat_markers, load_register, to_public
from keyboard_fl.data.resources import DEFAULT_LANG_DIR
from keyboard_fl.data.stats import register_gap_stats
from keyboard_fl.text import words

CFG = PopulationConfig(seed=0, num_train_users=1000, num_heldout_users=20, num_public_users=300)


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population(CFG)


@pytest.fixture(scope="module")
def texts(pop) -> dict[str, list[str]]:
    """Each split's typing as one normalized line per user (" w1 w2 | w3 ... ")."""
    out: dict[str, list[str]] = {}
    for split in ("train", "public"):
        out[split] = [" " + " | ".join(" ".join(words(m)) for m in u.train + u.test) + " " for u in pop.users(split)]
    return out


def _phrase(x: str) -> str:
    return " " + " ".join(words(x)) + " "


def test_public_split_holds_no_chat_marker(pop, texts):
    mk = chat_markers(pop.reg, pop.communities, pop.res.persona)
    public_words = Counter(w for t in texts["public"] for w in t.split())
    raw_public = "\n".join(m for u in pop.users("public") for m in u.train)
    for kind in ("abbreviations", "fillers", "trend_words"):
        leaked = {m for m in mk[kind] if m in public_words}
        assert not leaked, (kind, leaked)
    assert not {e for e in mk["emoji"] if e in raw_public}
    joined = "\n".join(texts["public"])
    assert not {n for n in mk["community_names"] if _phrase(n) in joined}
    # ... while the private users do type every kind
    private = "\n".join(texts["train"])
    for kind in ("abbreviations", "fillers", "community_names", "chat_phrases", "trend_words"):
        assert any(_phrase(m) in private for m in mk[kind]), kind


def test_public_register_is_written_text(pop):
    msgs = [m for u in list(pop.users("public"))[:100] for m in u.train]
    assert all(m[0].isupper() and m[-1] in ".?" for m in msgs)
    assert not any(" i " in f" {m} " for m in msgs)  # the pronoun is capitalised
    assert pop.persona(pop.user_id(CFG.num_train_users + CFG.num_heldout_users))[0].register == "public"
    assert pop.persona(pop.user_id(0))[0].register == "chat"


def test_to_public_writes_out_chat_forms(pop):
    assert to_public("im gonna b there lol, u ok", pop.reg) == "I'm going to b there, you okay."
    assert to_public("lol", pop.reg) == ""


def test_community_phrase_reaches_five_percent_of_users_and_never_public(pop, texts):
    joined_public = "\n".join(texts["public"])
    share = {
        n: sum(_phrase(n) in t for t in texts["train"]) / len(texts["train"])
        for c in pop.communities
        for wl in (c.places, c.teams, c.events)
        for n in wl.values
    }
    best = max(share, key=share.get)
    assert share[best] >= 0.05, (best, share[best])
    assert _phrase(best) not in joined_public
    # built of words the public split knows (in other contexts): scored by top-k, not OOV
    assert all(w in joined_public.split() for w in words(best))
    users = Counter(pop.persona(pop.user_id(i))[0].community for i in range(1000))
    assert users[0] > users[5] > users[11] > 0  # Zipf-popular communities


def test_stats_report_both_kinds(pop):
    g = register_gap_stats(pop, max_users=300)
    assert g["users"] == 300 and 0.01 < g["oov_rate"] < 0.3
    top = g["top_shared_phrases"]
    assert g["shared_phrases"] >= 1 and top[0]["user_share"] >= 0.05
    public_text = "\n".join(" " + " ".join(words(m)) + " " for u in pop.users("public") for m in u.train)
    assert all(_phrase(x["phrase"]) not in public_text for x in top)
    name = g["single_user_word_examples"][0]
    typed_by = [i for i in range(300) if name in {w for m in pop.messages(pop.user_id(i)) for w in words(m)}]
    assert len(typed_by) == 1 and name not in public_text.split()


def test_single_user_names_stay_single_user(pop, texts):
    """A user's invented friend/pet/street names: typed by that user, hardly anyone else."""
    first = set(pop.res.persona["first_names"]) | set(pop.res.persona["pet_names"])
    users_of = Counter(w for t in texts["train"][:400] for w in set(t.split()))
    typed = []
    for i in range(400):
        ents = pop.persona(pop.user_id(i))[0].entities
        for e in ("friend", "pet", "street"):
            for v in ents[e].values:
                w = words(v)[0]
                if w not in first and f" {w} " in texts["train"][i]:
                    typed.append(users_of[w])
    assert len(typed) > 100 and sum(c == 1 for c in typed) / len(typed) > 0.9


def test_trend_words_start_at_their_onset(pop):
    onset = dict(pop.reg.trends)
    seen = Counter()
    for i in range(300):
        uid = pop.user_id(i)
        msgs = pop.messages(uid)
        for j, m in enumerate(msgs):
            for w in set(words(m)) & set(onset):
                assert j / len(msgs) >= onset[w], (uid, j, w)
                seen[w] += 1
    assert len(seen) == len(onset)  # every trend gets used
    assert active_trends(pop.reg, 0.0) == ("zentok",) and len(active_trends(pop.reg, 0.99)) == len(onset)


def test_same_seed_same_users_byte_for_byte():
    small = PopulationConfig(seed=7, num_train_users=50, num_heldout_users=10, num_public_users=20)

    def digest(p: Population) -> str:
        h = hashlib.sha256()
        for split in ("train", "heldout", "public"):
            for u in p.users(split):
                h.update(json.dumps([u.user_id, u.train, u.test]).encode())
        return h.hexdigest()

    a, b = Population(small), Population(small)
    assert digest(a) == digest(b) and a.communities == b.communities
    other = Population(PopulationConfig(**{**small.__dict__, "seed": 8}))
    assert digest(other) != digest(a) and other.communities != a.communities


def test_bad_register_file_names_file_and_field(tmp_path):
    lang = tmp_path / "lang"
    shutil.copytree(DEFAULT_LANG_DIR, lang)
    path = lang / "register.json"
    raw = json.loads(path.read_text())
    raw["trends"]["words"][1] = ["glimmr", 1.5]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"register\.json\.trends\.words\[1\]"):
        load_register(lang)
    del raw["communities"]["count"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"register\.json\.communities: missing field 'count'"):
        load_register(lang)
    path.write_text("{")
    with pytest.raises(ValueError, match=r"register\.json:1"):
        load_register(lang)


def test_stats_command_shows_both_kinds():
    from typer.testing import CliRunner

    from keyboard_fl.cli import app

    res = CliRunner().invoke(app, ["stats", "--preset", "tiny", "--max-users", "300"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.replace("│", " ").split())
    assert "OOV rate against the" in out and "of users" in out
    assert "phrases typed by ≥5% of users" in out
    assert "typed by one user only" in out


def test_stats_command_reports_the_measured_gap_of_a_main_job(tmp_path):
    import json

    from typer.testing import CliRunner

    from keyboard_fl.cli import app

    summary = {"central": {"top1": 0.268, "public_pretrained": {"top1": 0.156}}, "fedavg": {"top1": 0.2}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    res = CliRunner().invoke(
        app, ["stats", "--preset", "tiny", "--max-users", "100", "--runs", str(tmp_path)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.replace("│", " ").split())
    assert "central − public-only top-1" in out and "26.8% − 15.6% = +11.2 points" in out
    res = CliRunner().invoke(app, ["stats", "--preset", "tiny", "--max-users", "100", "--runs", str(tmp_path / "none")])
    assert res.exit_code == 0 and "what private data adds" not in res.output  # no main job there: no row
