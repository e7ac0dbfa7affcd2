"""SecAgg+ DP-FedAvg in process: the quantization bound, and a strategy that only ever holds the sum.

The in-process runs use Flower's real ``SecAggPlusWorkflow`` (our
:class:`~keyboard_fl.flower.secagg_server.SecAggDpWorkflow`), its real
``secaggplus_mod`` on the devices (through :func:`keyboard_fl.flower.secagg.device_mod`),
real key agreement, Shamir shares and masks. Only the transport is in process:
:class:`InProcessGrid` hands each message, serialized and parsed again as on the
wire, to a per-node ``ClientApp`` (Flower's simulation engine needs Ray,
which this environment does not have; the loopback test runs the real SuperLink).
The devices' "training" returns fixed, distinctive updates so that the test
knows every individual update and can look for it in what the strategy receives.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common.secure_aggregation.quantization import quantize  # noqa: E402

from keyboard_fl.fl.round import make_server_optimizer  # noqa: E402
from keyboard_fl.flower import secagg_server  # noqa: E402
from keyboard_fl.flower.inprocess import InProcessGrid  # noqa: E402
from keyboard_fl.flower.secagg import SecAggParams, clip_for_secagg, device_mod, quantize_like_flower  # noqa: E402
from keyboard_fl.flower.secagg_server import run_secagg  # noqa: E402
from keyboard_fl.flower.strategy import DpFedAvg  # noqa: E402
from keyboard_fl.flower.task import FlowerSettings, LocalTask, abstract_model, arrays_to_params, params_to_arrays  # noqa: E402
from keyboard_fl.flower.traffic import CountingGrid, message_bytes  # noqa: E402
from keyboard_fl.models import ModelConfig  # noqa: E402
from keyboard_fl.privacy import PrivacyLedger, epsilon  # noqa: E402

C = 0.5
MODEL = ModelConfig(vocab_size=16, embed_dim=4, hidden_dim=4)


# ---------------------------------------------------------------------------- the quantization bound


def test_device_clip_leaves_room_for_worst_case_rounding(monkeypatch):
    d = 31424  # the tiny preset's parameter count
    p = SecAggParams(C, d)
    assert p.step == pytest.approx(2 * C / 2**22)
    assert p.device_clip_norm == pytest.approx(C - math.sqrt(d) * p.step * 1.001)
    assert 0 < C - p.device_clip_norm < 1e-4  # the price: C' is 0.01% below C
    # Worst case for stochastic rounding: every coordinate just above a grid point, and every draw rounds up.
    monkeypatch.setattr(np.random, "rand", lambda *shape: np.full(shape, 1 - 1e-12))  # always ceil
    x = _just_above_grid(p, p.device_clip_norm)
    assert np.linalg.norm(x) == pytest.approx(p.device_clip_norm, rel=1e-12)
    up = quantize_like_flower(clip_for_secagg([x], p), p)[0]
    assert np.linalg.norm(up) > p.device_clip_norm + 0.99 * math.sqrt(d) * p.step  # the norm really grew by ~sqrt(d)·s
    assert np.linalg.norm(up) < C  # ... and C' left room for it
    # Clipping to C itself would not: the same rounding pushes the quantized update above C.
    y = _just_above_grid(p, C)
    assert np.linalg.norm(y) == pytest.approx(C, rel=1e-12)
    assert np.linalg.norm(quantize_like_flower([y], p)[0]) > C


def _just_above_grid(p: SecAggParams, norm: float) -> np.ndarray:
    """All coordinates but one at (grid point + 0.001 step), the last one setting the L2 norm to ``norm``."""
    d, s, c = p.dim, p.step, p.clipping_range
    v = (math.floor((norm / math.sqrt(d) + c) / s) + 1e-3) * s - c
    x = np.full(d, v)
    x[-1] = math.sqrt(norm**2 - (d - 1) * v**2)
    return x


def test_quantization_parameters_are_checked():
    with pytest.raises(ValueError, match="too coarse"):
        SecAggParams(C, 10**6, quantization_range=64)
    with pytest.raises(ValueError, match="power of 2"):
        SecAggParams(C, 10, modulus_range=3 * 2**30)
    assert SecAggParams(C, 10).max_cohort == 1023
    with pytest.raises(ValueError, match="secagg-threshold"):
        FlowerSettings(secagg_threshold=0.5)
    with pytest.raises(FloatingPointError):
        clip_for_secagg([np.array([np.nan])], SecAggParams(C, 1))


def test_flower_quantizer_matches_our_step():
    p = SecAggParams(C, 3)
    q = quantize([np.array([-C, 0.0, C])], p.clipping_range, p.quantization_range)[0]
    assert q.tolist() == [0, 2**21, 2**22]  # -C -> 0, 0 -> R/2, C -> R: step 2C/R


# ---------------------------------------------------------------------------- an in-process deployment


@pytest.fixture
def _task_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _template():
    """Zero parameters of the model's shapes (numpy: no XLA compilation for the test's own arrays)."""
    return jax.tree.map(lambda t: np.zeros(t.shape, t.dtype), abstract_model(MODEL)[1])


def _updates(n: int, template) -> list[list[np.ndarray]]:
    """Distinctive updates: device i puts most of its norm (0.4) on a different block of coordinates."""
    leaves = jax.tree.leaves(template)
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        u = [rng.normal(size=x.shape) * 0.01 for x in leaves]
        u[i % len(u)].flat[:8] += 1.0
        norm = math.sqrt(sum(float(np.vdot(x, x)) for x in u))
        out.append([(x * (0.4 if i % 2 else 0.9) / norm).astype(np.float32) for x in u])  # odd ones unclipped
    return out


def _client_app(update: list[np.ndarray], template) -> ClientApp:
    app = ClientApp()

    @app.train(mods=[device_mod])
    def train(msg: Message, context: Context) -> Message:
        arrays_to_params(msg.content["arrays"], template)  # the device got the global model in our wire format
        clipped = [x * min(1.0, C / math.sqrt(sum(float(np.vdot(y, y)) for y in update))) for x in update]
        delta = jax.tree.unflatten(jax.tree.structure(template), clipped)
        content = RecordDict({"arrays": params_to_arrays(delta), "metrics": MetricRecord({"train-loss": 1.0})})
        return Message(content=content, reply_to=msg)

    return app


def _run(tmp_path, n_devices: int, drop, monkeypatch, rounds: int = 1, z: float = 0.7):
    template = _template()
    updates = _updates(n_devices, template)
    run_config = {"secagg": True, "clip-norm": C}
    apps = {}
    for i in range(n_devices):
        node_config = {"drop-in-round": 1} if i in (drop if isinstance(drop, tuple) else (drop,)) else {}
        ctx = Context(run_id=1, node_id=1000 + i, node_config=node_config, state=RecordDict(), run_config=run_config)
        apps[1000 + i] = (_client_app(updates[i], template), ctx)
    grid = CountingGrid(InProcessGrid(apps))  # weighs every message (attributes pass through)
    settings = FlowerSettings(
        num_users=n_devices,
        clients_per_round=float(n_devices),
        noise_multiplier=z,
        clip_norm=C,
        secagg=True,
        num_rounds=rounds,
        secagg_timeout=30.0,
    )
    ledger = PrivacyLedger(z, 1.0, 1e-5, n_devices)
    dp = DpFedAvg(
        template,
        make_server_optimizer("sgd", 1.0),
        ledger,
        clip_norm=C,
        seed=0,
        run_dir=tmp_path,
        node_wait=0.0,
        poll_interval=0.01,
    )
    seen = []  # every argument any strategy method was given
    for name in ("configure_fit", "aggregate_fit", "evaluate", "initialize_parameters", "release"):
        real = getattr(secagg_server.SumOnlyStrategy, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            seen.append((_name, args))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(secagg_server.SumOnlyStrategy, name, spy)
    train_config = LocalTask(MODEL, 8, 2, 4, 1, 0.1, 0).to_config()
    result = run_secagg(
        grid,
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        dp,
        settings,
        train_config,
        None,
    )
    return template, updates, dp, grid, seen, result


def _flat(leaves) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])


def _all_arrays(obj):
    """Every numpy array inside a (nested) argument: Parameters, FitRes, tuples, lists, dicts."""
    from flwr.common import Parameters, parameters_to_ndarrays

    if isinstance(obj, Parameters):
        yield _flat(parameters_to_ndarrays(obj)) if obj.tensors else np.zeros(0)
    elif isinstance(obj, np.ndarray):
        yield obj.ravel()
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _all_arrays(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _all_arrays(o)
    elif hasattr(obj, "parameters"):  # FitRes
        yield from _all_arrays(obj.parameters)


@pytest.mark.parametrize("drop", [None, 2])
@pytest.mark.usefixtures("_task_identity")
def test_strategy_gets_only_the_sum_and_releases_it_like_dp_fedavg(tmp_path, monkeypatch, drop):
    n, z = 4, 0.7
    template, updates, dp, grid, seen, _ = _run(tmp_path, n, drop, monkeypatch, z=z)
    survivors = [i for i in range(n) if i != drop]
    p = SecAggParams(C, int(_flat(jax.tree.leaves(template)).size))
    clipped = [_flat(clip_for_secagg(u, p)) for u in updates]  # what each device fed the quantizer (norm <= C')
    plain_sum = sum(clipped[i] for i in survivors)

    rec = dp.history[-1]
    assert rec["sampled_clients"] == n and rec["included_clients"] == len(survivors)
    assert rec["keys_shared_clients"] == n and rec["dropped_after_key_sharing"] == (0 if drop is None else 1)
    assert rec["epsilon"] == pytest.approx(epsilon(z, 1.0, 1, 1e-5), rel=1e-12)  # ε as without SecAgg

    # aggregate_fit got one vector: the mean over the survivors, within the quantization bound of the plain mean.
    given = [res.parameters for name, args in seen if name == "aggregate_fit" for _, res in args[1]]
    assert len(given) == len(survivors) and all(g is given[0] for g in given)  # one object, shared
    got_sum = next(_all_arrays(given[0])) * len(survivors)
    assert np.linalg.norm(got_sum - plain_sum) <= p.sum_error_bound(len(survivors))
    assert rec["secagg_sum_error_bound"] == pytest.approx(p.sum_error_bound(len(survivors)))
    # ... and released it as plain DP-FedAvg does: params + (sum + N(0, (zC)^2)) / qN.
    update = _flat(jax.tree.leaves(dp.state.params)) - _flat(jax.tree.leaves(template))
    noise = update * n - got_sum
    assert 0.5 * z * C < np.std(noise) < 1.5 * z * C and rec["noise_std"] == pytest.approx(z * C)

    # The strategy held the one aggregate and the global model; no individual update, quantized or not.
    arrays = [a for _, args in seen for a in _all_arrays(args) if a.size == plain_sum.size]
    assert arrays, "the spy saw no parameter vectors"
    mean = plain_sum / len(survivors)
    assert any(np.linalg.norm(a - mean) <= p.sum_error_bound(len(survivors)) for a in arrays)
    for a in arrays:
        for i in range(n):
            assert np.linalg.norm(a - clipped[i]) > 0.05, f"strategy saw device {i}'s update"
    # What reached the server side at all: masked vectors, uniform-looking integers mod M, not the quantized updates.
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    masked = [
        np.concatenate([bytes_to_ndarray(b).ravel() for b in m.content.config_records[RECORD_KEY_CONFIGS][k]][1:])
        for m in grid.received
        if not m.has_error()
        for k in [Key.MASKED_PARAMETERS]
        if k in m.content.config_records.get(RECORD_KEY_CONFIGS, {})
    ]
    assert len(masked) == len(survivors)
    M, R = p.modulus_range, p.quantization_range
    for v in masked:  # uniform over Z_M, while a quantized update sits within [0, R] (R/M = 1/1024)
        # The mean of L uniform draws on [0, 1) has std 1/sqrt(12 L): 6 of them (a false alarm about once in
        # 5e8) for this small model's L = 204 coordinates, where a fixed 0.05 was only ~2.5 std and failed by chance.
        assert abs(v.astype(np.float64).mean() / M - 0.5) < 6 / np.sqrt(12 * v.size), v.size
        assert np.mean(v <= R) < 0.05  # uniform: ~1/1024 of them; a quantized update: all of them


@pytest.mark.usefixtures("_task_identity")
def test_traffic_is_counted_per_secagg_stage(tmp_path, monkeypatch):
    n = 4
    template, _, _, grid, _, _ = _run(tmp_path, n, 2, monkeypatch)  # device 2 drops before its masked vector
    kinds = grid.per_kind
    assert list(kinds) == ["setup", "share_keys", "collect_masked_vectors", "unmask"]
    assert [kinds[k]["messages_down"] for k in kinds] == [n, n, n, n - 1]  # the dropout is not asked to unmask
    assert [kinds[k]["messages_up"] for k in kinds] == [n, n, n - 1, n - 1]
    for key in ("down", "up", "messages_down", "messages_up"):  # the same messages, filed two ways
        assert sum(r[key] for r in kinds.values()) == sum(r[key] for r in grid.per_node.values())
    # The model travels down in the masked-vector stage; a masked vector (d uint32 words and more) travels up.
    d = int(_flat(jax.tree.leaves(template)).size)
    model = message_bytes(Message(RecordDict({"arrays": params_to_arrays(template)}), 1000, "train"))
    assert kinds["collect_masked_vectors"]["down"] > n * model
    assert kinds["collect_masked_vectors"]["up"] > (n - 1) * 4 * d
    assert kinds["setup"]["down"] < n * 1000 and kinds["setup"]["up"] < n * 1000  # configs and two public keys


@pytest.mark.usefixtures("_task_identity")
def test_a_halted_protocol_still_releases_noise_and_steps_the_ledger(tmp_path, monkeypatch):
    # 4 devices, threshold 0.75 of 4 shares = 3: with 2 dropping after key sharing the masks cannot be removed.
    z = 0.7
    template, _, dp, _, seen, _ = _run(tmp_path, 4, (1, 2), monkeypatch, z=z)
    rec = dp.history[-1]
    assert rec["sampled_clients"] == 4 and rec["included_clients"] == 0 and rec["dropped_after_key_sharing"] == 2
    assert rec["epsilon"] == pytest.approx(epsilon(z, 1.0, 1, 1e-5), rel=1e-12)
    assert not [1 for name, _ in seen if name == "aggregate_fit"]  # nothing was unmasked
    noise = (_flat(jax.tree.leaves(dp.state.params)) - _flat(jax.tree.leaves(template))) * 4
    assert 0.5 * z * C < np.std(noise) < 1.5 * z * C  # the noise alone was released
