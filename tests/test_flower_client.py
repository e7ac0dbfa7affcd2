"""The Flower ClientApp's handlers, called in process on a prepared one-user device directory."""

from __future__ import annotations

import numpy as np
import optax
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from keyboard_fl.flower import client_app  # noqa: E402
from keyboard_fl.flower.loopback import prepare  # noqa: E402
from keyboard_fl.flower.task import FlowerSettings, LocalTask, arrays_to_params, load_model, params_to_arrays  # noqa: E402

C = 0.05  # small enough that a local update is clipped


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    prep = prepare(tmp_path_factory.mktemp("flower_client"), 1)
    settings = FlowerSettings(tokenizer=str(prep.tokenizer), clip_norm=C)
    tok, _, _, params = load_model(settings)
    task = LocalTask.from_settings(settings, tok.vocab_size)
    run_config = {"tokenizer": str(prep.tokenizer), "clip-norm": C}
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={"data-dir": str(prep.client_dirs[0]), "partition-id": 0},
        state=RecordDict(),
        run_config=run_config,
    )
    return ctx, task, params


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _message(task, params, kind):
    cfg = ConfigRecord({**task.to_config(), "server-round": 1})
    return Message(
        content=RecordDict({"arrays": params_to_arrays(params), "config": cfg}), dst_node_id=7, message_type=kind
    )


def test_train_replies_with_a_delta_clipped_on_the_device_and_numbers_only(device):
    ctx, task, params = device
    reply = client_app.app(_message(task, params, MessageType.TRAIN), ctx)
    assert not reply.has_error()
    assert set(reply.content.keys()) == {"arrays", "metrics"}  # no text, no config echo
    delta = arrays_to_params(reply.content["arrays"], params)
    assert 0 < float(optax.tree.norm(delta)) <= C * (1 + 1e-5)
    m = dict(reply.content["metrics"])
    assert set(m) == {"num-examples", "num-tokens", "train-loss", "clipped"}
    assert m["clipped"] == 1.0 and m["num-examples"] >= 1 and np.isfinite(m["train-loss"])
    again = client_app.app(_message(task, params, MessageType.TRAIN), ctx)  # same seed, user and round
    np.testing.assert_array_equal(arrays_to_params(again.content["arrays"], params)["embedding"], delta["embedding"])


def test_evaluate_reports_local_loss(device):
    ctx, task, params = device
    m = dict(client_app.app(_message(task, params, MessageType.EVALUATE), ctx).content["metrics"])
    assert m["num-examples"] > 0 and 0 < m["eval-loss"] < 10


def test_a_node_without_data_dir_fails_clearly(device):
    ctx, task, params = device
    bare = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config=ctx.run_config)
    with pytest.raises(ValueError, match="data-dir"):  # flwr-clientapp turns this into an error reply
        client_app.app(_message(task, params, MessageType.TRAIN), bare)
