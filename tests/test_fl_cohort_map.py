"""Tests for keyboard_fl.fl.cohort_map: one client's work mapped over a padded cohort."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from keyboard_fl.fl.client import client_update
from keyboard_fl.fl.cohort_map import ClientSlots, for_each_client
from keyboard_fl.fl.sharding import client_mesh
from keyboard_fl.testing import toy_cohort, toy_init, toy_loss

K = 8


def _slots(num_real=6):
    c = toy_cohort(1, K, num_real=num_real, steps=2, batch=4, seq_len=8)
    return ClientSlots(c.inputs, c.targets, c.weights, jax.random.split(jax.random.key(0), K), c.mask.astype(bool))


def _scaled_first_row(params, slot):
    """A client whose update is params * (its first token id), weight = sampled; NaN for token 0."""
    x = slot.inputs[0, 0, 0].astype(jnp.float32)
    update = jax.tree.map(lambda p: p * jnp.where(x == 0, jnp.nan, x), params)
    return update, slot.sampled.astype(jnp.float32), {"x": x}


@pytest.mark.parametrize("chunk", [None, 1, 2, 4])
def test_weighted_sum_and_stats_match_a_python_loop(chunk):
    params = {"w": jnp.arange(3.0)}
    slots = _slots()
    total, stats = jax.jit(lambda p, s: for_each_client(_scaled_first_row, p, s, chunk=chunk))(params, slots)
    xs = np.asarray(slots.inputs[:, 0, 0, 0], np.float64)
    sampled = np.asarray(slots.sampled)
    want = sum(xs[k] * np.arange(3.0) for k in range(K) if sampled[k])
    np.testing.assert_allclose(np.asarray(total["w"]), want, rtol=1e-6)
    # Stats of sampled slots are per slot; padding chunks (skipped) report zeros.
    np.testing.assert_array_equal(np.asarray(stats["x"])[sampled], xs[sampled])


def test_weight_zero_excludes_a_nan_update():
    params = {"w": jnp.ones(2)}
    slots = _slots(num_real=K)
    slots = slots._replace(inputs=slots.inputs.at[3, 0, 0, 0].set(0), sampled=slots.sampled.at[3].set(False))
    total, _ = for_each_client(_scaled_first_row, params, slots, chunk=2)
    assert np.all(np.isfinite(np.asarray(total["w"])))


def test_empty_chunks_are_skipped_at_run_time():
    """A chunk without a sampled slot never runs: its (NaN-producing) clients leave no trace."""
    params = {"w": jnp.ones(2)}
    slots = _slots(num_real=2)  # slots 2..7 padding
    slots = slots._replace(inputs=slots.inputs.at[2:, 0, 0, 0].set(0))  # would be NaN if they ran
    calls = []

    def fn(p, s):
        calls.append(1)
        u, w, st = _scaled_first_row(p, s)
        return u, jnp.ones_like(w), st  # weight 1 even for padding: only skipping keeps NaN out

    total, _ = for_each_client(fn, params, slots, chunk=2)
    assert np.all(np.isfinite(np.asarray(total["w"])))
    with pytest.raises(ValueError, match="must divide"):
        for_each_client(fn, params, slots, chunk=3)


def _dots(jaxpr):
    """(batch_dims, lhs shape, rhs shape) of every dot_general in a jaxpr, sub-jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (_, (lb, _)) = eqn.params["dimension_numbers"]
            out.append((tuple(lb), eqn.invars[0].aval.shape, eqn.invars[1].aval.shape))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out += _dots(sub)
    return out


def test_first_local_step_is_one_matmul_over_the_clients():
    """Under vmap with shared params, the first step's forward matmul takes all clients' tokens against
    one weight matrix (no batch dimension); later steps use each client's own weights (batched)."""
    params = toy_init(jax.random.key(0))
    n = 4
    c = toy_cohort(2, n, steps=2, batch=4, seq_len=8)
    batches = {"inputs": c.inputs, "targets": c.targets, "weights": c.weights}
    keys = jax.random.split(jax.random.key(0), n)
    f = jax.vmap(lambda b, k: client_update(params, b, k, loss_fn=toy_loss, client_opt=0.5))
    dots = _dots(jax.make_jaxpr(f)(batches, keys).jaxpr)
    w_shape = params["w"].shape
    shared = [d for d in dots if not d[0] and d[2] == w_shape and d[1][0] == n]  # [n, B, T, E] @ [E, V]
    per_client = [d for d in dots if d[0] and d[2] == (n,) + w_shape]  # [n, B, T, E] @ [n, E, V]
    assert shared and per_client, dots
    got, _ = f(batches, keys)
    for k in range(n):
        one = jax.tree.map(lambda x, k=k: x[k], batches)
        want, _ = client_update(params, one, keys[k], loss_fn=toy_loss, client_opt=0.5)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b), rtol=2e-5, atol=1e-6)


def test_mesh_must_be_the_clients_axis():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("x",))
    if mesh.size < 2:
        pytest.skip("needs two devices")
    with pytest.raises(ValueError, match="clients"):
        for_each_client(_scaled_first_row, {"w": jnp.ones(2)}, _slots(), mesh=mesh)
    total, _ = for_each_client(_scaled_first_row, {"w": jnp.ones(2)}, _slots(), mesh=client_mesh(2))
    assert np.all(np.isfinite(np.asarray(total["w"])))
