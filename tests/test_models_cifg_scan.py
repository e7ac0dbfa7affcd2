"""The CIFG recurrence's hand-written backward pass (keyboard_fl/models/cifg_scan.py).

Its gradients must equal autodiff of the plain ``lax.scan`` of the same cell
(float64, so only rounding separates them) and finite differences, for
cotangents on both outputs, and the model's loss gradient must agree in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from keyboard_fl.models.cifg_scan import cifg_cell, cifg_scan


def _autodiff_scan(xg, w_r, w_p):
    """The reference: the same cell under ``lax.scan``, differentiated by JAX."""
    b, h = xg.shape[1], xg.shape[2] // 3
    state = (jnp.zeros((b, h), xg.dtype), jnp.zeros((b, w_p.shape[1]), xg.dtype))

    def body(state, x):
        c, hh, _ = cifg_cell(*state, x, w_r, w_p)
        return (c, hh), (c, hh)

    return jax.lax.scan(body, state, xg)[1]


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _inputs(dtype):
    t, b, h, e = 6, 3, 5, 4
    k = jax.random.split(jax.random.key(0), 5)
    xg = jax.random.normal(k[0], (t, b, 3 * h), dtype)
    w_r = 0.5 * jax.random.normal(k[1], (e, 3 * h), dtype)
    w_p = 0.5 * jax.random.normal(k[2], (h, e), dtype)
    dc = jax.random.normal(k[3], (t, b, h), dtype)
    dh = jax.random.normal(k[4], (t, b, e), dtype)
    return (xg, w_r, w_p), (dc, dh)


def test_gradients_equal_autodiff_of_the_plain_scan(x64):
    args, (dc, dh) = _inputs(jnp.float64)

    def scalar(f):
        return lambda *a: sum(jnp.sum(o * w) for o, w in zip(f(*a), (dc, dh), strict=True))

    for o, ref in zip(cifg_scan(*args), _autodiff_scan(*args), strict=True):
        np.testing.assert_array_equal(o, ref)
    ours = jax.grad(scalar(cifg_scan), argnums=(0, 1, 2))(*args)
    ref = jax.grad(scalar(_autodiff_scan), argnums=(0, 1, 2))(*args)
    for name, a, b in zip(("xg", "w_recurrent", "w_projection"), ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
    check_grads(cifg_scan, args, order=1, modes=["rev"])
