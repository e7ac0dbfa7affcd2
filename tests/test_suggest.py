"""Tests for keyboard_fl.suggest: prefix tables, whole-word beam search, the Suggester."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyboard_fl.data import Population, PopulationConfig
from keyboard_fl.models import ModelConfig, init_params
from keyboard_fl.suggest import SearchConfig, Suggester, collect_words, prefix_tables
from keyboard_fl.tokenizer import CONTINUATION, WORD_START, Tokenizer, TokenizerConfig, train_tokenizer

SPACE = "\u2581"
HAND_PIECES = [
    SPACE,
    SPACE + "the",
    SPACE + "cat",
    SPACE + "car",
    SPACE + "ca",
    SPACE + "to",
    "c",
    "a",
    "t",
    "r",
    "h",
    "e",
    "o",
    "s",
    "ts",
    ".",
    ",",
    SPACE + ",",
]


def _model_proto_class():
    """SentencePiece's ``ModelProto`` message class, built from the schema it ships.

    ``sentencepiece_model_pb2`` itself refuses to import under a protobuf runtime
    older than the one it was generated with (flwr caps protobuf < 7), so the
    serialized file descriptor is read from it and loaded into a private pool.
    """
    import ast
    import importlib.util

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    src = open(
        importlib.util.find_spec("sentencepiece").submodule_search_locations[0] + "/sentencepiece_model_pb2.py"
    ).read()
    blob = next(
        ast.literal_eval(n.args[0])
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "AddSerializedFile"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(blob))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sentencepiece.ModelProto"))


def hand_tokenizer(pieces=HAND_PIECES) -> Tokenizer:
    """A real SentencePiece unigram model with a hand-made vocabulary."""
    m = _model_proto_class()()
    for p, kind in [("<pad>", 3), ("<unk>", 2), ("<s>", 3), ("</s>", 3)]:
        x = m.pieces.add()
        x.piece, x.type, x.score = p, kind, 0.0
    for p in pieces:
        x = m.pieces.add()
        x.piece, x.score = p, -float(len(p))
    ts = m.trainer_spec
    ts.model_type, ts.vocab_size = 1, len(m.pieces)
    ts.pad_id, ts.unk_id, ts.bos_id, ts.eos_id = 0, 1, 2, 3
    ns = m.normalizer_spec
    ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces = "identity", True, False, True
    return Tokenizer(m.SerializeToString())


@pytest.fixture(scope="module")
def htok():
    return hand_tokenizer()


def _id(tok, piece):
    return tok.pieces.index(piece)


# --- prefix tables -----------------------------------------------------------


def test_prefix_tables_empty_prefix(htok):
    allowed, advance = prefix_tables(htok, "", 5)
    assert allowed.shape == (7, htok.vocab_size) and advance.shape == (htok.vocab_size,)
    np.testing.assert_array_equal(allowed[0], htok.piece_kinds == WORD_START)
    for row in allowed[1:]:
        np.testing.assert_array_equal(row, htok.piece_kinds == CONTINUATION)
    assert advance[_id(htok, SPACE + "cat")] == 3 and advance[_id(htok, SPACE)] == 0 and advance[_id(htok, ".")] == 0


def test_prefix_tables_ca(htok):
    allowed, _ = prefix_tables(htok, "ca", 5)
    start = {htok.pieces[i] for i in np.flatnonzero(allowed[0])}
    assert start == {SPACE, SPACE + "cat", SPACE + "car", SPACE + "ca"}  # bare ▁ and pieces agreeing with "ca"
    row = lambda ell: {htok.pieces[i] for i in np.flatnonzero(allowed[1 + ell])}
    assert row(0) == {"c"}  # after "▁": must spell "ca…"
    assert row(1) == {"a"}  # after "c"
    assert row(2) == {p for p in HAND_PIECES if htok.piece_kinds[_id(htok, p)] == CONTINUATION}  # prefix done: anything
    assert not allowed[:, [_id(htok, p) for p in (".", ",", SPACE + ",")]].any()


def test_prefix_tables_too_long(htok):
    with pytest.raises(ValueError, match="max_prefix"):
        prefix_tables(htok, "abcdef", 3)


# --- search with a model whose weights make "cat" the likeliest word ---------


def _biased_params(tok, bias: dict[str, float]):
    cfg = ModelConfig(vocab_size=tok.vocab_size, embed_dim=8, hidden_dim=8)
    graphdef, params = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(jnp.zeros_like, params)  # logits = output_bias, whatever the context
    b = np.zeros(tok.vocab_size, np.float32)
    for piece, v in bias.items():
        b[tok.pieces.index(piece)] = v
    params["output_bias"] = jnp.asarray(b)
    return graphdef, params


BIAS = {SPACE + "cat": 8.0, SPACE + "car": 6.0, SPACE + "ca": 3.0, "ts": 2.0, "</s>": 7.0, SPACE + "the": 1.0}


def test_suggester_returns_the_likeliest_word(htok):
    graphdef, params = _biased_params(htok, BIAS)
    s = Suggester(graphdef, params, htok, SearchConfig(beam=6, depth=3, max_prefix=8))
    scored = s.suggest_scored("the", 3)  # partial word "the" → completion
    assert scored[0][0] == "the"
    words = s.suggest("the ", 3)
    assert words[0] == "cat" and words[1] == "car"
    scored = s.suggest_scored("the ", 3)
    assert all(a[1] >= b[1] for a, b in zip(scored, scored[1:]))
    # log P(cat) = log p(▁cat) + log P(boundary), as the output layer gives them
    lp = jax.nn.log_softmax(params["output_bias"])
    boundary = htok.piece_kinds != CONTINUATION  # a new word, punctuation or </s> ends the word
    np.testing.assert_array_equal(htok.ends_word, boundary)
    expect = lp[_id(htok, SPACE + "cat")] + jax.nn.logsumexp(jnp.where(boundary, lp, -jnp.inf))
    np.testing.assert_allclose(dict(scored)["cat"], expect, rtol=1e-5)


def test_completions_respect_the_prefix(htok):
    graphdef, params = _biased_params(htok, BIAS)
    s = Suggester(graphdef, params, htok, SearchConfig(beam=6, depth=3, max_prefix=8))
    assert s.suggest("the ca", 3)[:2] == ["cat", "car"]
    assert s.suggest("the car", 3)[0] == "car"
    assert all(w.startswith("car") for w in s.suggest("the car", 3))
    assert s.suggest("the cat", 3)[0] == "cat"
    assert s.suggest("the xyz", 3) == []  # no piece spells it
    assert s.suggest("the " + "c" * 9, 3) == []  # longer than max_prefix


def test_collect_words_merges_segmentations(htok):
    cat, ca, t, dot = (_id(htok, p) for p in (SPACE + "cat", SPACE + "ca", "t", "."))
    pieces = np.zeros((2, 2, 2), np.int32)
    scores = np.full((2, 2), -np.inf)
    pieces[0, 0, 0], scores[0, 0] = cat, np.log(0.2)
    pieces[0, 1, 0], scores[0, 1] = dot, np.log(0.5)  # not a word
    pieces[1, 0] = [ca, t]
    scores[1, 0] = np.log(0.1)
    out = collect_words(htok, pieces, scores, 3)
    assert [w for w, _ in out] == ["cat"]
    np.testing.assert_allclose(out[0][1], np.log(0.3))
    assert collect_words(htok, pieces, scores, 3, prefix="x") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ("", "")),
        ("hello", ("", "hello")),
        ("Hello wor", ("hello ", "wor")),
        ("hello ", ("hello ", "")),
        ("hello\n", ("hello\n", "")),
        ("see you  tomo", ("see you  ", "tomo")),
        ("hi there!", ("hi there! ", "")),
        ("ok, it's", ("ok, ", "it's")),
        ("ok, don'", ("ok, ", "don'")),  # an apostrophe inside a word being typed
        ("(hi", ("(hi ", "")),
        ("ÉCOLE", ("", "école")),
    ],
)
def test_split_context(text, expected):
    assert Suggester.split_context(text) == expected


# --- a real tokenizer and a random model: properties --------------------------


@pytest.fixture(scope="module")
def real():
    pop = Population(PopulationConfig(seed=1, num_train_users=0, num_heldout_users=0, num_public_users=300))
    tok = train_tokenizer((m for u in pop.users("public") for m in u.train), TokenizerConfig(vocab_size=512))
    graphdef, params = init_params(
        ModelConfig(vocab_size=tok.vocab_size, embed_dim=16, hidden_dim=16), jax.random.key(3)
    )
    return Suggester(graphdef, params, tok)


def test_real_suggestions_are_words(real):
    words = real.suggest("see you", 3)
    assert len(words) == 3 and len(set(words)) == 3
    assert all(w.startswith("you") for w in words)
    assert all(" " not in w for w in real.suggest("see you ", 3))
    assert real.suggest("i have a " * 30, 3)  # long contexts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    context=st.sampled_from(["", "see you ", "hey, "]),
    first=st.sampled_from("abcdefghijklmnoprstuwy"),
    rest=st.text(alphabet="abcdefghijklmnoprstuwy'", max_size=6),
)
def test_every_completion_starts_with_the_prefix(real, context, first, rest):
    _, typed = Suggester.split_context(context + first + rest)
    assert typed.startswith(first) or "''" in rest  # "a''" is not a word being typed
    for word in real.suggest(context + first + rest, 3):
        assert word.startswith(typed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_arbitrary_unicode_never_raises(real, text):
    out = real.suggest(text, 3)
    assert isinstance(out, list) and len(out) <= 3
    _, typed = Suggester.split_context(text)
    assert all(w.startswith(typed) for w in out)


def test_transformer_serves_suggestions_and_evaluation(real):
    """The Transformer plugs into the same search and evaluation (state[1] is its hidden vector)."""
    from keyboard_fl.eval.neural import predict_messages

    tok = real.tokenizer
    cfg = ModelConfig(
        kind="transformer", vocab_size=tok.vocab_size, embed_dim=16, hidden_dim=32, num_layers=1, num_heads=2, context=8
    )
    graphdef, params = init_params(cfg, jax.random.key(5))
    s = Suggester(graphdef, params, tok)
    assert len(s.suggest("see you ", 3)) == 3
    assert all(w.startswith("to") for w in s.suggest("see you to", 3))
    assert s.suggest("one two three four five six seven eight nine ten ", 3)  # longer than the context
    msgs = ["see you tomorrow at the station, ok?", "hi", "one two three four five six seven eight nine ten eleven"]
    preds, nll, n = predict_messages(graphdef, params, tok, msgs)
    assert [len(p) for p in preds] == [len(tok.encode_with_targets(m)[1]) for m in msgs]
    assert all(len(words) == 3 for p in preds for _, words in p)
    assert n == sum(len(tok.encode(m)) - 1 for m in msgs) and np.isfinite(nll)
