"""The DP-FedAvg Flower strategy and the wire format, in process (no SuperLink, fast)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from keyboard_fl.fl.round import make_server_optimizer  # noqa: E402
from keyboard_fl.fl.sampling import sample_cohort  # noqa: E402
from keyboard_fl.flower.strategy import DpFedAvg  # noqa: E402
from keyboard_fl.flower.task import FlowerSettings, LocalTask, arrays_to_params, params_to_arrays  # noqa: E402
from keyboard_fl.privacy import PrivacyLedger, add_gaussian_noise, clip_update, epsilon  # noqa: E402


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _params():
    return {
        "dense": {"w": np.zeros((4, 3), np.float32), "b": np.zeros((3,), np.float32)},
        "emb": np.zeros((5, 2), np.float32),
    }


def _strategy(z=0.5, q=1.0, n=3, seed=0):
    ledger = PrivacyLedger(z, q, 1e-5, n)
    return DpFedAvg(_params(), make_server_optimizer("sgd", 1.0), ledger, clip_norm=1.0, seed=seed, node_wait=0.0)


def _reply(msg, delta, **metrics):
    content = RecordDict(
        {"arrays": params_to_arrays(delta), "metrics": MetricRecord({"train-loss": 1.0, "clipped": 0.0, **metrics})}
    )
    return Message(content=content, reply_to=msg)


def test_wire_format_round_trips_and_rejects_mismatch():
    p = jax.tree.map(lambda x: np.random.default_rng(0).normal(size=x.shape).astype(np.float32), _params())
    back = arrays_to_params(params_to_arrays(p), _params())
    jax.tree.map(np.testing.assert_array_equal, back, p)
    with pytest.raises(ValueError, match="keys"):
        arrays_to_params(params_to_arrays({"other": np.zeros(3, np.float32)}), _params())
    bad = {**p, "emb": np.zeros((5, 3), np.float32)}
    with pytest.raises(ValueError, match="emb"):
        arrays_to_params(params_to_arrays(bad), _params())


def test_local_task_round_trips_through_a_config_record():
    task = LocalTask.from_settings(FlowerSettings(), vocab_size=512)
    assert LocalTask.from_config(ConfigRecord(task.to_config())) == task


def test_aggregate_is_clipped_sum_plus_seeded_noise_over_expected_cohort():
    s = _strategy(z=0.5, q=1.0, n=3)
    msgs = list(s.configure_train(1, params_to_arrays(_params()), ConfigRecord(), FakeGrid([30, 10, 20])))
    assert sorted(m.metadata.dst_node_id for m in msgs) == [10, 20, 30]  # q = 1: everyone
    rng = np.random.default_rng(1)
    deltas = [
        jax.tree.map(lambda x: (scale * rng.normal(size=x.shape)).astype(np.float32), _params())  # noqa: B023 (used within this iteration)
        for scale in (0.01, 3.0, 10.0)
    ]
    replies = [_reply(m, d) for m, d in zip(msgs, deltas)]
    arrays, metrics = s.aggregate_train(1, replies)

    total = jax.tree.map(lambda *xs: sum(xs), *[clip_update(d, 1.0)[0] for d in deltas])  # server re-clips
    noise_key = jax.random.fold_in(s.noise_key, 1)
    expected = jax.tree.map(
        lambda x: x / 3.0, add_gaussian_noise(total, 0.5 * 1.0, noise_key)
    )  # SGD(1): params += mean
    got = arrays_to_params(arrays, _params())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
    assert metrics["included_clients"] == 3 and metrics["reply_norm_max"] > 1.0  # these fake devices did not clip
    assert metrics["epsilon"] == pytest.approx(epsilon(0.5, 1.0, 1, 1e-5))


def test_poisson_sampling_is_seeded_per_round_and_ledger_steps_without_replies():
    nodes = list(range(100, 140))
    s = _strategy(z=1.0, q=0.25, n=40, seed=3)
    chosen = []
    for r in (1, 2):
        msgs = list(s.configure_train(r, params_to_arrays(_params()), ConfigRecord(), FakeGrid(reversed(nodes))))
        got = sorted(m.metadata.dst_node_id for m in msgs)
        idx, mask, _ = sample_cohort(jax.random.fold_in(s.sample_key, r), 40, 0.25, 40)
        assert got == [nodes[int(i)] for i, m in zip(np.asarray(idx), np.asarray(mask)) if m]
        chosen.append(got)
        _, metrics = s.aggregate_train(r, [])  # nobody replied: noise is still released and accounted
        assert metrics["included_clients"] == 0 and metrics["failed_clients"] == len(got)
    assert chosen[0] != chosen[1]
    assert s.ledger.rounds == 2
    assert s.ledger.epsilon() == pytest.approx(epsilon(1.0, 0.25, 2, 1e-5))
    again = _strategy(z=1.0, q=0.25, n=40, seed=3)
    msgs = list(again.configure_train(1, params_to_arrays(_params()), ConfigRecord(), FakeGrid(nodes)))
    assert sorted(m.metadata.dst_node_id for m in msgs) == chosen[0]  # same seed, same draw


def test_nonfinite_duplicate_and_unsampled_replies_are_dropped():
    s = _strategy(z=0.0, q=1.0, n=2)
    msgs = list(s.configure_train(1, params_to_arrays(_params()), ConfigRecord(), FakeGrid([1, 2])))
    ones = jax.tree.map(lambda x: np.full(x.shape, 0.01, np.float32), _params())
    bad = jax.tree.map(lambda x: np.full(x.shape, np.nan, np.float32), _params())
    stranger = Message(content=RecordDict(), dst_node_id=99, message_type="train")  # a node that was not sampled
    replies = [
        _reply(msgs[0], ones),
        _reply(msgs[0], ones),
        _reply(msgs[1], bad),
        _reply(stranger, ones),
    ]  # + a duplicate
    arrays, metrics = s.aggregate_train(1, replies)
    assert metrics["included_clients"] == 1 and metrics["nonfinite_clients"] == 1
    got = arrays_to_params(arrays, _params())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b / 2.0, rtol=1e-6), got, ones)  # z = 0; divided by qN = 2
