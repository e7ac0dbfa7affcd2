"""A small causal decoder-only Transformer next-piece model (flax.nnx).

The alternative to the CIFG-LSTM with the same interface (``states``,
``logits``, ``__call__``, ``step``, ``initial_state``), so the trainers, the
suggestion search and the evaluation accept either. GPT-style (Radford et al.
2019; nanoGPT): learned positions, pre-LayerNorm blocks (Xiong et al. 2020) of
causal multi-head self-attention and a GELU MLP, a final LayerNorm and an
output layer tied to the input embedding (Press & Wolf 2017).

The model attends to at most ``config.context`` pieces. Its per-position
*state* is ``(window, h, length)``: the last ``context`` pieces read
(left-aligned, zero-padded), the final hidden vector ``h`` [B, E] (element
``[1]``, as for the CIFG-LSTM, so ``logits(state[1])`` gives the next-piece
scores) and the number of valid pieces in the window. ``step`` appends a piece
(dropping the oldest once the window is full) and recomputes the window: no
key/value cache, which at keyboard context lengths costs little and keeps the
state a plain pytree of arrays. Longer sequences are read with the same
sliding window, so ``states`` and ``step`` always agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from keyboard_fl.models.config import ModelConfig

State = tuple[jax.Array, jax.Array, jax.Array]  # (window [B, C] int32, h [B, E], length [B] int32)


class _Block(nnx.Module):
    """Pre-LN block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        e, f = config.embed_dim, config.hidden_dim
        self.num_heads = config.num_heads
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")
        self.ln1_scale, self.ln1_bias = nnx.Param(jnp.ones((e,))), nnx.Param(jnp.zeros((e,)))
        self.w_qkv = nnx.Param(init(rngs.params(), (e, 3 * e)))
        self.w_out = nnx.Param(init(rngs.params(), (e, e)) * 0.5)
        self.ln2_scale, self.ln2_bias = nnx.Param(jnp.ones((e,))), nnx.Param(jnp.zeros((e,)))
        self.w_up = nnx.Param(init(rngs.params(), (e, f)))
        self.b_up = nnx.Param(jnp.zeros((f,)))
        self.w_down = nnx.Param(init(rngs.params(), (f, e)) * 0.5)
        self.b_down = nnx.Param(jnp.zeros((e,)))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, T, E]; mask [B, 1, T, T] (True: may attend)."""
        b, t, e = x.shape
        hd = e // self.num_heads
        y = _layer_norm(x, self.ln1_scale[...], self.ln1_bias[...])
        q, k, v = jnp.split(jnp.matmul(y, self.w_qkv[...]), 3, axis=-1)
        q, k, v = (z.reshape(b, t, self.num_heads, hd).transpose(0, 2, 1, 3) for z in (q, k, v))
        att = jnp.matmul(q, jnp.swapaxes(k, -1, -2)) * hd**-0.5  # [B, H, T, T]
        att = jax.nn.softmax(jnp.where(mask, att, -1e30), axis=-1)
        y = jnp.matmul(att, v).transpose(0, 2, 1, 3).reshape(b, t, e)
        x = x + jnp.matmul(y, self.w_out[...])
        y = _layer_norm(x, self.ln2_scale[...], self.ln2_bias[...])
        y = jax.nn.gelu(jnp.matmul(y, self.w_up[...]) + self.b_up[...])
        return x + jnp.matmul(y, self.w_down[...]) + self.b_down[...]


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * scale + bias


class Transformer(nnx.Module):
    """Embedding + positions → pre-LN causal blocks → LayerNorm → tied softmax."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        v, e = config.vocab_size, config.embed_dim
        self.config = config
        self.embedding = nnx.Param(jax.random.normal(rngs.params(), (v, e)) * e**-0.5)
        self.positions = nnx.Param(jax.random.normal(rngs.params(), (config.context, e)) * 0.02)
        self.blocks = nnx.List([_Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_f_scale, self.ln_f_bias = nnx.Param(jnp.ones((e,))), nnx.Param(jnp.zeros((e,)))
        self.output_bias = nnx.Param(jnp.zeros((v,)))

    def initial_state(self, batch_size: int) -> State:
        c, e = self.config.context, self.config.embed_dim
        return jnp.zeros((batch_size, c), jnp.int32), jnp.zeros((batch_size, e)), jnp.zeros((batch_size,), jnp.int32)

    def hidden(self, tokens: jax.Array) -> jax.Array:
        """Final hidden vectors [B, T, E] for tokens [B, T], T ≤ context, causal."""
        t = tokens.shape[1]
        if t > self.config.context:
            raise ValueError(f"{t} tokens exceed the Transformer context of {self.config.context}")
        x = jnp.take(self.embedding[...], tokens, axis=0) + self.positions[...][:t]
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
        for block in self.blocks:
            x = block(x, mask)
        return _layer_norm(x, self.ln_f_scale[...], self.ln_f_bias[...])

    def logits(self, h: jax.Array) -> jax.Array:
        """Tied output layer: scores of every piece for hidden vectors ``h``."""
        return jnp.matmul(h, self.embedding[...].T) + self.output_bias[...]

    def states(self, tokens: jax.Array) -> State:
        """The state after reading each token: ``(window, h, length)`` with leading [B, T]."""
        b, t = tokens.shape
        c = self.config.context
        tokens = tokens.astype(jnp.int32)
        pos = jnp.arange(t)
        length = jnp.minimum(pos + 1, c)  # [T]
        start = jnp.maximum(pos + 1 - c, 0)  # first token of each position's window
        idx = start[:, None] + jnp.arange(c)[None, :]  # [T, C]
        valid = jnp.arange(c)[None, :] < length[:, None]
        window = jnp.where(valid[None], jnp.take(tokens, jnp.minimum(idx, t - 1), axis=1), 0)  # [B, T, C]
        h = self.hidden(tokens[:, : min(t, c)])  # positions < context: one causal pass
        if t > c:  # later positions: the sliding window, exactly as ``step`` sees it
            late = self.hidden(window[:, c:].reshape(b * (t - c), c))[:, -1]
            h = jnp.concatenate([h, late.reshape(b, t - c, -1)], axis=1)
        return window, h, jnp.broadcast_to(length, (b, t)).astype(jnp.int32)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Next-piece logits [B, T, V] for token ids [B, T]."""
        return self.logits(self.states(tokens)[1])

    def step(self, state: State, token: jax.Array) -> tuple[jax.Array, State]:
        """Read one token per row ([B]); return next-piece logits [B, V] and the new state."""
        window, _, length = state
        c = self.config.context
        full = length >= c
        shifted = jnp.where(full[:, None], jnp.roll(window, -1, axis=1), window)
        slot = jnp.minimum(length, c - 1)
        window = jnp.where(jnp.arange(c)[None, :] == slot[:, None], token.astype(jnp.int32)[:, None], shifted)
        length = jnp.minimum(length + 1, c).astype(jnp.int32)
        hs = self.hidden(window)
        h = jnp.take_along_axis(hs, (length - 1)[:, None, None], axis=1)[:, 0]
        return self.logits(h), (window, h, length)
