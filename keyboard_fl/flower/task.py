"""What the Flower ServerApp and ClientApp share: settings, model, data, wire format.

Both sides read the same Flower *run config* (``[tool.flwr.app.config]`` of
``keyboard_fl/flower/app/pyproject.toml``, overridable with ``flwr run
--run-config``) into one :class:`FlowerSettings`. The server resolves the
preset into a :class:`LocalTask` (model shape and local-training sizes) and
sends it with every ``train`` message, so the device builds exactly the
server's model; parameters travel as a Flower ``ArrayRecord`` whose keys are
the pytree paths (a mismatch fails loudly instead of reordering weights).

Each ClientApp message runs in a fresh process (Flower's deployment engine
starts one ``flwr-clientapp`` per message), so the device side is kept
light: no preset/config import (it pulls scipy in), an abstract model
(``nnx.eval_shape``) as the wire template, and :func:`enable_compilation_cache`
pointing JAX at an on-disk compilation cache, so only the first process of
a run pays for XLA compilation of the client update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from keyboard_fl import rng
from keyboard_fl.models import ModelConfig, Params, init_params, make_model, split
from keyboard_fl.rng import Stream
from keyboard_fl.runs import DP_FEDAVG
from keyboard_fl.tokenizer import Tokenizer

__all__ = [
    "FlowerSettings",
    "LocalTask",
    "abstract_model",
    "arrays_to_params",
    "enable_compilation_cache",
    "load_model",
    "params_to_arrays",
]


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(f"run config {key}: expected true or false, got {value!r}")


@dataclasses.dataclass(frozen=True)
class FlowerSettings:
    """The Flower run config, typed. Keys are the run-config keys with ``-`` → ``_``."""

    preset: str = "tiny"  # RunConfig preset giving the model, seq_len and local-training sizes
    seed: int = 0  # the one seed: init, cohort sampling, local shuffling, noise
    num_rounds: int = 3  # server rounds
    num_users: int = 3  # N: the population (one SuperNode = one device = one user); δ default and the wait for nodes
    clients_per_round: float = 3.0  # expected cohort q·N: q = clients_per_round / num_users; the fixed DP denominator
    clip_norm: float = 0.5  # C: every device clips its whole delta to this L2 norm before replying
    noise_multiplier: float = 1.0  # z: the server adds N(0, (zC)²) to the sum of clipped deltas
    delta: float = 0.0  # δ of the reported (ε, δ); 0 → default_delta(num_users)
    server_optimizer: str = "sgd"  # make_server_optimizer name: sgd (lr 1 = FedAvg), nesterov or adam
    server_lr: float = 1.0
    client_lr: float = 0.0  # local SGD step; 0 → the preset's
    max_examples: int = 0  # rows a device trains on per round; 0 → the preset's
    local_epochs: int = 0  # 0 → the preset's
    tokenizer: str = ""  # path of the public SentencePiece model shipped with the app
    eval_data: str = ""  # server-side fixed evaluation set: a materialised dir (heldout split) or JSONL
    eval_messages: int = 200  # messages of eval_data scored each round (0: no server evaluation)
    run_dir: str = ""  # where the server writes privacy.json, result.json and the final model ("" = none)
    round_timeout: float = 600.0  # seconds the server waits for a round's replies
    node_wait: float = 120.0  # seconds the server waits for num_users nodes to connect
    fraction_evaluate: float = 0.0  # fraction of nodes asked for a local evaluation each round (0: none)
    jax_cache: str = ""  # on-disk XLA compilation cache shared by the client processes ("" = off)
    resume: bool = False  # continue from run_dir/state's last round checkpoint (after a SuperLink restart)
    secagg: bool = False  # SecAgg+ (keyboard_fl.flower.secagg): the server sees only the masked sum of the updates
    secagg_shares: float = 1.0  # fraction of the cohort each device Shamir-shares its keys with (1: everyone)
    secagg_threshold: float = 0.75  # fraction of those shares needed to unmask; > 0.5 so no minority can unmask
    secagg_quantization: int = 2**22  # R: integers per coordinate range [-C, C] (Flower's default)
    secagg_modulus: int = 2**32  # M: masks and the sum live in Z_M (power of 2, > cohort·R)
    secagg_timeout: float = 0.0  # seconds the server waits in each SecAgg+ stage; 0 -> round-timeout
    save_rounds: bool = False  # SecAgg runs: keep every round's released (noised) model in run-dir/rounds/
    traffic: bool = False  # count the bytes each device downloads/uploads into run-dir/traffic.json

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FlowerSettings:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in fields:
                continue  # other apps' keys are not ours to judge
            kwargs[name] = _as_bool(key, value) if name == "resume" else type(getattr(cls(), name))(value)
        return cls(**kwargs)

    def __post_init__(self):
        if self.num_users < 1:
            raise ValueError(f"num-users must be >= 1, got {self.num_users}")
        if not 0 < self.clients_per_round <= self.num_users:
            raise ValueError(
                f"clients-per-round must be in (0, num-users={self.num_users}], got {self.clients_per_round}"
            )
        if not self.clip_norm > 0:
            raise ValueError(f"clip-norm must be > 0, got {self.clip_norm}")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise-multiplier must be >= 0, got {self.noise_multiplier}")
        if not (0 < self.secagg_shares <= 1 and 0.5 < self.secagg_threshold <= 1):
            raise ValueError(
                f"secagg-shares must be in (0, 1] and secagg-threshold in (0.5, 1], "
                f"got {self.secagg_shares}, {self.secagg_threshold}"
            )

    @property
    def sampling_prob(self) -> float:
        """q: each connected node joins a round independently with this probability."""
        return self.clients_per_round / self.num_users

    def run_config(self):
        """The preset (a ``RunConfig``) with this run's seed and local-training overrides."""
        from keyboard_fl.config import preset  # server side only: it imports scipy

        cfg = preset(self.preset, mode=DP_FEDAVG, seed=self.seed)
        fed = cfg.federated
        changes = {}
        if self.client_lr:
            changes["client_lr"] = self.client_lr
        if self.max_examples:
            changes["max_examples"] = self.max_examples
        if self.local_epochs:
            changes["local_epochs"] = self.local_epochs
        return dataclasses.replace(cfg, federated=dataclasses.replace(fed, **changes))


@dataclasses.dataclass(frozen=True)
class LocalTask:
    """What a device must know to train the server's model: sent in every ``train`` message."""

    model: ModelConfig  # architecture, vocab_size set from the public tokenizer
    seq_len: int  # pieces per training row
    batch_size: int  # local mini-batch
    max_examples: int  # rows used per round (the user's most recent)
    local_epochs: int  # passes over those rows
    client_lr: float  # local SGD step
    seed: int  # the run's seed (local shuffling is derived from it, the user id and the round)

    @classmethod
    def from_settings(cls, settings: FlowerSettings, vocab_size: int) -> LocalTask:
        cfg = settings.run_config()
        fed = cfg.federated
        return cls(
            dataclasses.replace(cfg.model, vocab_size=vocab_size),
            cfg.seq_len,
            fed.batch_size,
            fed.max_examples,
            fed.local_epochs,
            float(fed.client_lr),
            cfg.seed,
        )

    def to_config(self) -> dict[str, Any]:
        """Flat scalars for a Flower ``ConfigRecord``."""
        out = {f"model-{k.replace('_', '-')}": v for k, v in dataclasses.asdict(self.model).items()}
        out.update({k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items() if k != "model"})
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalTask:
        model = {
            f.name: type(getattr(ModelConfig(), f.name))(config[f"model-{f.name.replace('_', '-')}"])
            for f in dataclasses.fields(ModelConfig)
        }
        cast = {"int": int, "float": float}
        rest = {
            f.name: cast[f.type](config[f.name.replace("_", "-")]) for f in dataclasses.fields(cls) if f.name != "model"
        }
        return cls(ModelConfig(**model), **rest)


def abstract_model(model_cfg: ModelConfig) -> tuple[Any, Params]:
    """``(graphdef, params)`` with ``ShapeDtypeStruct`` leaves: no weights are computed."""
    from flax import nnx

    return split(nnx.eval_shape(lambda: make_model(model_cfg, jax.random.key(0))))


def enable_compilation_cache(path: str) -> None:
    """Persist XLA executables under ``path`` so later processes skip compilation."""
    if not path:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def load_model(settings: FlowerSettings) -> tuple[Tokenizer, ModelConfig, Any, Params]:
    """``(tokenizer, model_config, graphdef, initial_params)``; the init depends only on the seed."""
    if not settings.tokenizer:
        raise ValueError("run config 'tokenizer' is empty: give the path of the public SentencePiece model")
    tokenizer = Tokenizer.load(settings.tokenizer)
    cfg = settings.run_config()
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
    graphdef, params = init_params(model_cfg, rng.key(cfg.seed, Stream.INIT))  # as train.run
    return tokenizer, model_cfg, graphdef, params


def _names(params: Params) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def params_to_arrays(params: Params):
    """A Flower ``ArrayRecord`` keyed by pytree path (float32 numpy arrays)."""
    from flwr.app import Array, ArrayRecord

    leaves = jax.tree.leaves(params)
    return ArrayRecord({n: Array.from_numpy_ndarray(np.asarray(x)) for n, x in zip(_names(params), leaves)})


def arrays_to_params(record, template: Params) -> Params:
    """Inverse of :func:`params_to_arrays`; checks names, shapes and dtypes against ``template``."""
    names = _names(template)
    leaves, treedef = jax.tree.flatten(template)
    if sorted(record.keys()) != sorted(names):
        raise ValueError(
            f"ArrayRecord keys do not match the model: got {sorted(record.keys())[:4]}…, want {names[:4]}…"
        )
    out = []
    for n, t in zip(names, leaves):
        x = record[n].numpy()
        if x.shape != tuple(t.shape) or x.dtype != t.dtype:
            raise ValueError(f"{n}: got {x.dtype}{list(x.shape)}, want {t.dtype}{list(t.shape)}")
        out.append(x)
    return jax.tree.unflatten(treedef, out)
