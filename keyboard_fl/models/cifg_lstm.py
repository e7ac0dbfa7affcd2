"""CIFG-LSTM next-piece language model, as in Gboard's federated NWP model.

Hard et al. 2018, "Federated Learning for Mobile Keyboard Prediction"
(arXiv 1811.03604): a single-layer LSTM with a *coupled input and forget gate*
(CIFG, Greff et al. 2017: f = 1 − i, so three gates instead of four, 25% fewer
recurrent parameters) and a projection of the cell output back to the
embedding width, so the input embedding and the output softmax share one
matrix (Press & Wolf 2017). Gboard: 670 units, embedding 96, 10k words.

The recurrence over a whole sequence is :func:`~keyboard_fl.models.cifg_scan.cifg_scan`
(``lax.scan`` over plain arrays with a hand-written backward pass that does the
weight gradients as one matmul over all tokens), so the model has no hidden
state of its own and splits cleanly into ``(graphdef, params)`` for the
federated code. ``step`` advances one token, for the suggestion search.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from keyboard_fl.models.cifg_scan import cifg_cell, cifg_scan
from keyboard_fl.models.config import ModelConfig

State = tuple[jax.Array, jax.Array]  # (cell c [B, H], projected output h [B, E])


class CifgLstm(nnx.Module):
    """Embedding → CIFG-LSTM with projection → tied softmax."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        v, e, h = config.vocab_size, config.embed_dim, config.hidden_dim
        self.config = config
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        self.embedding = nnx.Param(jax.random.normal(rngs.params(), (v, e)) * e**-0.5)
        # Gates in order: input i, candidate g, output o. A negative input-gate
        # bias starts the coupled forget gate (1 − i) mostly open.
        self.w_input = nnx.Param(init(rngs.params(), (e, 3 * h)))
        self.w_recurrent = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (e, 3 * h)))
        self.gate_bias = nnx.Param(jnp.concatenate([jnp.full((h,), -1.0), jnp.zeros((2 * h,))]))
        self.w_projection = nnx.Param(init(rngs.params(), (h, e)))
        self.output_bias = nnx.Param(jnp.zeros((v,)))

    def initial_state(self, batch_size: int) -> State:
        h, e = self.config.hidden_dim, self.config.embed_dim
        return jnp.zeros((batch_size, h)), jnp.zeros((batch_size, e))

    def _cell(self, state: State, x_gates: jax.Array) -> State:
        c, h, _ = cifg_cell(*state, x_gates, self.w_recurrent[...], self.w_projection[...])
        return c, h

    def _gates_in(self, tokens: jax.Array) -> jax.Array:
        x = jnp.take(self.embedding[...], tokens, axis=0)
        return jnp.matmul(x, self.w_input[...]) + self.gate_bias[...]

    def logits(self, h: jax.Array) -> jax.Array:
        """Tied output layer: scores of every piece for projected outputs ``h``."""
        return jnp.matmul(h, self.embedding[...].T) + self.output_bias[...]

    def states(self, tokens: jax.Array) -> State:
        """The state after reading each token: ``(c, h)`` with shapes [B, T, ·]."""
        xg = jnp.swapaxes(self._gates_in(tokens), 0, 1)  # [T, B, 3H]
        cs, hs = cifg_scan(xg, self.w_recurrent[...], self.w_projection[...])
        return jnp.swapaxes(cs, 0, 1), jnp.swapaxes(hs, 0, 1)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Next-piece logits [B, T, V] for token ids [B, T]."""
        return self.logits(self.states(tokens)[1])

    def step(self, state: State, token: jax.Array) -> tuple[jax.Array, State]:
        """Read one token per row ([B]); return next-piece logits [B, V] and the new state."""
        state = self._cell(state, self._gates_in(token))
        return self.logits(state[1]), state
