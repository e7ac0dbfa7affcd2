"""The CIFG-LSTM recurrence over a whole sequence, with a hand-written backward pass.

Autodiff of ``lax.scan`` accumulates the recurrent weights' gradients inside
the backward loop: at every time step, ``h_{t-1}ᵀ dz_t`` and ``m_tᵀ dh_t``
are matmuls whose inner dimension is the batch (16 rows), small enough that
the loop's overhead and the tiny matmuls dominate a CPU client step. Here the
backward loop only carries the state gradients (``dz_t``, ``dh_t`` per step,
two matmuls by the shared weights); the weight gradients are then one matmul
each over all ``B·T`` tokens, ``Hprevᵀ DZ`` and ``Mᵀ DH``, as cuDNN's RNN
backward does (Appleyard et al. 2016, "Optimizing Performance of Recurrent
Neural Networks on GPUs", arXiv 1604.01946). The function computed is the
same; only the float summation order of the two weight gradients differs.

Cell (Hard et al. 2018, arXiv 1811.03604; CIFG, Greff et al. 2017): gates
``z = xg_t + h_{t-1} W_r`` split into i, g, o; ``c = (1 − i)·c + i·tanh(g)``;
``m = σ(o)·tanh(c)``; ``h = m W_p``. State starts at zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cifg_scan", "cifg_cell"]


def cifg_cell(c: jax.Array, h: jax.Array, xg: jax.Array, w_r: jax.Array, w_p: jax.Array):
    """One step: ``(c, h)`` and the input gates ``xg`` → ``(c, h, gates)``; gates = (i, tanh g, σ o)."""
    zi, zg, zo = jnp.split(xg + jnp.matmul(h, w_r), 3, axis=-1)
    i, g, o = jax.nn.sigmoid(zi), jnp.tanh(zg), jax.nn.sigmoid(zo)
    c = (1.0 - i) * c + i * g
    m = o * jnp.tanh(c)
    return c, jnp.matmul(m, w_p), (i, g, o, m)


def _forward(xg, w_r, w_p):
    """``xg`` [T, B, 3H] → ``(cs [T, B, H], hs [T, B, E])`` and what the backward pass needs."""
    t, b, h3 = xg.shape
    c0 = jnp.zeros((b, h3 // 3), xg.dtype)
    h0 = jnp.zeros((b, w_p.shape[1]), xg.dtype)

    def body(state, x):
        c, h, gates = cifg_cell(*state, x, w_r, w_p)
        return (c, h), (c, h, gates)

    _, (cs, hs, gates) = jax.lax.scan(body, (c0, h0), xg)
    return (cs, hs), (cs, hs, gates)


@jax.custom_vjp
def cifg_scan(xg: jax.Array, w_r: jax.Array, w_p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """States after each step from a zero state: ``(cs [T, B, H], hs [T, B, E])`` for input gates ``xg`` [T, B, 3H]."""
    return _forward(xg, w_r, w_p)[0]


def _fwd(xg, w_r, w_p):
    out, (cs, hs, gates) = _forward(xg, w_r, w_p)
    return out, (cs, hs, gates, w_r, w_p)


def _bwd(res, cotangents):
    cs, hs, (i, g, o, m), w_r, w_p = res
    d_cs, d_hs = cotangents
    c_prev = jnp.concatenate([jnp.zeros_like(cs[:1]), cs[:-1]])

    def body(carry, x):
        dh_next, dc_next = carry
        dh_out, dc_out, c, cp, i, g, o = x
        dh = dh_out + dh_next
        dm = jnp.matmul(dh, w_p.T)
        tc = jnp.tanh(c)
        dc = dc_out + dc_next + dm * o * (1.0 - tc * tc)
        dzi = dc * (g - cp) * i * (1.0 - i)
        dzg = dc * i * (1.0 - g * g)
        dzo = dm * tc * o * (1.0 - o)
        dz = jnp.concatenate([dzi, dzg, dzo], axis=-1)
        return (jnp.matmul(dz, w_r.T), dc * (1.0 - i)), (dz, dh)

    zero = (jnp.zeros_like(hs[0]), jnp.zeros_like(cs[0]))
    _, (dz, dh) = jax.lax.scan(body, zero, (d_hs, d_cs, cs, c_prev, i, g, o), reverse=True)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])
    # The weight gradients over all T·B tokens at once: one matmul each.
    d_wr = jnp.einsum("tbe,tbg->eg", h_prev, dz)
    d_wp = jnp.einsum("tbh,tbe->he", m, dh)
    return dz, d_wr, d_wp


cifg_scan.defvjp(_fwd, _bwd)
