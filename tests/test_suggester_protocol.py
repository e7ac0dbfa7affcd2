"""One suggestion strip: the JAX, ONNX and n-gram back-ends implement keyboard_fl.suggester.Suggester."""

from __future__ import annotations

import jax
import pytest

from keyboard_fl.data import Population, PopulationConfig
from keyboard_fl.demo.incremental import IncrementalSuggester
from keyboard_fl.eval.ksr import keystroke_savings
from keyboard_fl.eval.ngram import KneserNeyTrigram
from keyboard_fl.models import ModelConfig, init_params
from keyboard_fl.runs import model_info
from keyboard_fl.suggest import Suggester as JaxSuggester
from keyboard_fl.suggester import Suggester
from keyboard_fl.tokenizer import TokenizerConfig, train_tokenizer

TEXTS = ["", "see you", "see you ", "hey, how are y", "i have a " * 20, "🙂 x", "don'"]


@pytest.fixture(scope="module")
def public():
    pop = Population(PopulationConfig(seed=1, num_train_users=0, num_heldout_users=0, num_public_users=300))
    return [m for u in pop.users("public") for m in u.train]


@pytest.fixture(scope="module")
def jax_backend(public):
    tok = train_tokenizer(iter(public), TokenizerConfig(vocab_size=512))
    graphdef, params = init_params(
        ModelConfig(vocab_size=tok.vocab_size, embed_dim=16, hidden_dim=16), jax.random.key(3)
    )
    return JaxSuggester(graphdef, params, tok)


@pytest.fixture(scope="module")
def onnx_backend(jax_backend, public, tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from keyboard_fl.dictionary import public_vocabulary
    from keyboard_fl.export import OnnxSuggester
    from keyboard_fl.export.onnx_export import export_run

    out = tmp_path_factory.mktemp("export")
    info = model_info("random", {"mode": "fedavg", "params": 1})
    words = public_vocabulary(public)
    manifest = export_run(
        jax_backend.graphdef, jax_backend.params, jax_backend.tokenizer, info, out, words=words, quantize=False
    )
    assert manifest["run"] == "random" and manifest["privacy"]["privacy"] == "not private"
    return OnnxSuggester(out)


@pytest.fixture(scope="module")
def ngram_backend(public):
    return KneserNeyTrigram.fit(public)


@pytest.fixture(params=["jax", "onnx", "ngram"])
def backend(request):
    return request.getfixturevalue(f"{request.param}_backend")


def test_each_backend_satisfies_the_protocol(backend):
    assert isinstance(backend, Suggester)
    for text in TEXTS:
        context, prefix = backend.split_context(text)
        scored = backend.suggest_from(backend.context_state(context), prefix, 3)
        assert backend.suggest_scored(text, 3) == scored
        assert backend.suggest(text, 3) == [w for w, _ in scored]
        assert len(scored) <= 3 and all(w.startswith(prefix) for w, _ in scored)
        assert all(isinstance(s, float) for _, s in scored) and [s for _, s in scored] == sorted(
            (s for _, s in scored), reverse=True
        )


def test_incremental_wrapper_gives_the_same_strip_for_every_backend(backend):
    inc = IncrementalSuggester(backend)
    assert isinstance(inc, Suggester)
    typed = "see you tomorrow at the st"
    for i in range(len(typed) + 1):
        assert inc.suggest_scored(typed[:i], 3) == backend.suggest_scored(typed[:i], 3)
    assert inc.hits > inc.misses > 0  # the context was reused inside words


def test_onnx_and_jax_agree(jax_backend, onnx_backend):
    assert onnx_backend.dictionary is not None and len(onnx_backend.dictionary) > 100  # words.txt of the export
    same = JaxSuggester(
        jax_backend.graphdef, jax_backend.params, jax_backend.tokenizer, dictionary=onnx_backend.dictionary
    )
    for text in TEXTS:
        assert onnx_backend.suggest(text, 3) == same.suggest(text, 3)


def test_ksr_takes_a_suggester_or_a_function(ngram_backend):
    msgs = ["see you tomorrow", "how are you"]
    assert keystroke_savings(msgs, ngram_backend) == keystroke_savings(msgs, ngram_backend.suggest)
    with pytest.raises(TypeError, match="Suggester"):
        keystroke_savings(msgs, 42)
