"""Secure aggregation (SecAgg+) for DP-FedAvg over Flower: the quantization bound and the device side.

SecAgg+ (Bell et al. 2020, arXiv:2009.07851; SecAgg: Bonawitz et al. 2017,
CCS) sums integer vectors modulo ``M`` so that the server learns only the sum
of the surviving clients' vectors: each device adds pairwise masks (agreed with
its neighbours by Diffie-Hellman) and a private mask, and Shamir-shares its
mask seeds so that the server can remove the masks of devices that drop out
after sharing their keys. Flower 1.42 implements it as ``secaggplus_mod`` (device)
and ``SecAggPlusWorkflow`` (server; see :mod:`keyboard_fl.flower.secagg_server`).

Quantization and the sensitivity argument
----------------------------------------
Flower's quantizer maps each coordinate, box-clipped to ``[-c, c]``, to an
integer in ``[0, R]`` by *stochastic* rounding (``floor`` or ``ceil`` of
``(x + c)·R/(2c)``), so a coordinate moves by less than one step
``s = 2c/R`` and a vector by less than ``sqrt(d)·s`` in L2 (``d`` coordinates).
The DP noise must be calibrated to the norm of what is actually summed, the
*quantized* update. So the device clips its delta to

    C' = C − sqrt(d)·s·(1 + 10⁻³)

and then ``‖x̂‖ ≤ ‖x‖ + ‖x̂ − x‖ < C' + sqrt(d)·s < C`` for every rounding
outcome: the add/remove-one-user sensitivity of the sum is still ``C`` and the
server's ``N(0, (zC)²)`` noise, the accountant and ε are those of plain DP-FedAvg.
(The ``10⁻³`` absorbs float64 rounding in the quantizer, ~2⁻⁵² relative.) With
``c = C`` no coordinate of a vector of norm ``≤ C'`` is box-clipped (box clipping
could only shrink the norm anyway). The sum over ``n`` devices is exact modulo
``M`` while ``n·R < M``; its distance from the plain sum of the clipped updates
is below ``n·sqrt(d)·s`` (worst case; typically ``sqrt(n·d)·s/2``).

The device reports weight 1 (``num_examples = 1``) and no metrics: the
server's SecAgg+ weighted mean is then the plain mean over the ``n`` surviving
devices, and the only per-device value the server sees is the masked vector.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from keyboard_fl.flower.task import LocalTask, abstract_model, arrays_to_params, params_to_arrays

__all__ = ["SecAggParams", "clip_for_secagg", "device_mod", "quantize_like_flower"]


@dataclasses.dataclass(frozen=True)
class SecAggParams:
    """SecAgg+ quantization for updates of L2 norm ``≤ clip_norm`` (see the module docstring)."""

    clip_norm: float  # C: the L2 bound of the *quantized* update; the server's noise std is z·C
    dim: int  # d: number of coordinates (model parameters) in an update
    quantization_range: int = 2**22  # R: [-C, C] maps onto the integers 0..R (Flower's default 2^22)
    modulus_range: int = 2**32  # M: masks and sums live in Z_M (Flower's default and maximum, 2^32)

    def __post_init__(self):
        if not self.clip_norm > 0 or self.dim < 1:
            raise ValueError(f"secagg: clip_norm must be > 0 and dim >= 1, got {self.clip_norm}, {self.dim}")
        if self.modulus_range <= self.quantization_range or self.modulus_range & (self.modulus_range - 1):
            raise ValueError(
                f"secagg-modulus must be a power of 2 above secagg-quantization={self.quantization_range}, "
                f"got {self.modulus_range}"
            )
        if not self.device_clip_norm > 0:
            raise ValueError(
                f"secagg-quantization={self.quantization_range} is too coarse for d={self.dim}: the rounding "
                f"bound {self.rounding_bound:.3g} is not below C={self.clip_norm}; raise it"
            )

    @property
    def clipping_range(self) -> float:
        """``c``: the per-coordinate box of Flower's quantizer; ``C`` clips no coordinate of a clipped update."""
        return float(self.clip_norm)

    @property
    def step(self) -> float:
        """``s = 2c/R``: one quantization step."""
        return 2.0 * self.clipping_range / self.quantization_range

    @property
    def rounding_bound(self) -> float:
        """Bound on ``‖x̂ − x‖`` for one device's update under stochastic rounding: ``sqrt(d)·s``, plus slack."""
        return math.sqrt(self.dim) * self.step * (1.0 + 1e-3)

    @property
    def device_clip_norm(self) -> float:
        """``C'``: what the device clips to, so that the quantized update has norm ``< C``."""
        return self.clip_norm - self.rounding_bound

    @property
    def max_cohort(self) -> int:
        """Largest ``n`` with ``n·R < M``: more devices would overflow the modular sum."""
        return (self.modulus_range - 1) // self.quantization_range

    def sum_error_bound(self, n: int) -> float:
        """Bound on ``‖Σ x̂ − Σ x‖`` over ``n`` devices (L2)."""
        return n * self.rounding_bound


def clip_for_secagg(leaves: list[np.ndarray], params: SecAggParams) -> list[np.ndarray]:
    """The device's update, in float64, scaled to L2 norm ``≤ C'`` (a no-op below ``C'``)."""
    leaves = [np.asarray(x, np.float64) for x in leaves]
    norm = math.sqrt(sum(float(np.vdot(x, x)) for x in leaves))
    if not math.isfinite(norm):
        raise FloatingPointError("local update is not finite; nothing is sent")
    scale = min(1.0, params.device_clip_norm / norm) if norm > 0 else 1.0
    return [x * scale for x in leaves]


def quantize_like_flower(leaves: list[np.ndarray], params: SecAggParams) -> list[np.ndarray]:
    """Flower's own quantize-then-dequantize of one update (what one device contributes to the sum)."""
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    q = quantize(leaves, params.clipping_range, params.quantization_range)
    return dequantize(q, params.clipping_range, params.quantization_range)


def _train_then_prepare(call_next, msg: Message, ctxt: Context) -> Message:
    """Run the plain ``train`` handler on the SecAgg+ workflow's ``fitins`` and shape its reply for SecAgg+."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    if int(ctxt.node_config.get("drop-in-round", -1)) == int(fitins.config["server-round"]):
        # Fault injection (tests, benchmarks): this device fails after sharing its keys, before sending its vector.
        raise ConnectionAbortedError(f"device dropped out of round {fitins.config['server-round']} after key sharing")
    task = LocalTask.from_config(fitins.config)
    template = abstract_model(task.model)[1]
    leaves, treedef = jax.tree.flatten(template)
    received = parameters_to_ndarrays(fitins.parameters)
    if [x.shape for x in received] != [tuple(t.shape) for t in leaves]:
        raise ValueError("secagg: received parameters do not match the model in the task config")
    original = msg.content
    msg.content = RecordDict(
        {
            "arrays": params_to_arrays(jax.tree.unflatten(treedef, received)),
            "config": ConfigRecord(dict(fitins.config)),
        }
    )
    try:
        reply = call_next(msg, ctxt)  # local training + clipping to C, as without SecAgg
    finally:
        msg.content = original
    delta = jax.tree.leaves(arrays_to_params(reply.content["arrays"], template))
    clip_norm = float(ctxt.run_config["clip-norm"])
    params = SecAggParams(clip_norm, sum(int(x.size) for x in delta), **_quantization(ctxt.run_config))
    prepared = clip_for_secagg(delta, params)
    # Weight 1 and no metrics: the SecAgg+ "weighted mean" is the plain mean, and nothing else leaves in the clear.
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(prepared), num_examples=1, metrics={})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def _quantization(run_config) -> dict:
    return {
        "quantization_range": int(run_config.get("secagg-quantization", 2**22)),
        "modulus_range": int(run_config.get("secagg-modulus", 2**32)),
    }


def device_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """ClientApp mod: Flower's ``secaggplus_mod`` when the run config has ``secagg = true``, else a pass-through.

    Under SecAgg+ the setup, key-sharing and unmasking stages are answered by
    ``secaggplus_mod`` alone; in the masked-vector stage it calls the plain
    ``train`` handler (training, clipping to C), then this mod clips to ``C'``
    in float64, and ``secaggplus_mod`` quantizes and masks the result.
    """
    if msg.metadata.message_type != MessageType.TRAIN or not bool(ctxt.run_config.get("secagg", False)):
        return call_next(msg, ctxt)
    return secaggplus_mod(msg, ctxt, functools.partial(_train_then_prepare, call_next))
