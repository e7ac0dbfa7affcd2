"""Run configuration: one frozen dataclass per concern, and the named presets.

Every run is described by a :class:`RunConfig`; its JSON form is saved in the
run directory, so a run can be resumed, audited and reproduced from it alone.
One seed controls everything (DESIGN.md §3): population, sampling, init, noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

from keyboard_fl.data import PopulationConfig
from keyboard_fl.models.config import ModelConfig
from keyboard_fl.privacy.canaries import CanaryConfig
from keyboard_fl.privacy.empirical import CanaryClientConfig
from keyboard_fl.privacy.phrase_canaries import PhraseCanaryConfig
from keyboard_fl.runs import CENTRAL, DP_FEDAVG, MODES
from keyboard_fl.tokenizer import TokenizerConfig
from keyboard_fl.train.central import CentralConfig

Mode = Literal["central", "fedavg", "dp-fedavg"]  # for type checkers: the values of keyboard_fl.runs.MODES


def _positive(obj, *names: str, real: bool = False) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {v!r}")


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    rounds: int = 300  # server rounds (Gboard ran ~3,000; the CPU default is short and starts from public pretraining)
    clients_per_round: float = 64.0  # expected cohort q·N; q is derived from the population size
    max_examples: int = (
        16  # rows (seq_len pieces each) a client trains on per round (its most recent); caps heavy typists
    )
    batch_size: int = 8  # local mini-batch (Stack Overflow benchmark: 16; our packed rows are denser)
    local_epochs: int = 1  # passes over the client's rows per round (2–3 with client lr 1.0 diverged here)
    client_lr: float = 1.0  # plain local SGD, as in FedAvg
    server_optimizer: Literal["sgd", "nesterov", "adam"] = (
        "adam"  # FedAdam (Reddi et al. 2021), best on Stack Overflow NWP; Gboard: "nesterov"
    )
    server_lr: float = 0.005  # FedAdam's server step; use 1.0 for "sgd"/"nesterov"
    clip_norm: float = 0.5  # C: L2 bound on each user's model delta (DP mode only)
    noise_multiplier: float | None = None  # z; None → calibrated from target_epsilon
    target_epsilon: float | None = 10.0  # ε to calibrate z for, over `rounds` rounds (DP mode only)
    delta: float | None = None  # None → default_delta(N), below 1/N
    # Privacy mechanism (keyboard_fl/privacy/mechanism.py; DP mode only): the one source of z, C and q.
    mechanism: str = "dp-fedavg"  # "dp-fedavg" (Gaussian noise each round, McMahan et al. 2018); others register themselves (privacy.MECHANISMS)
    sampling: str = "poisson"  # participation the sampler implements AND the accountant assumes (DESIGN §3); "fixed" etc. are refused where no sampler implements them
    bands: int = 1  # b for sampling="cyclic": users split into b bands, round t Poisson-samples band t mod b (amplified BandMF, Choquette-Choo et al. 2023); participations are >= b rounds apart
    accountant: str | None = (
        None  # "pld" or "rdp"; None → the mechanism's own (PLD for Poisson). A mismatch with `sampling` is refused
    )
    adaptive_clip_quantile: float | None = (
        None  # γ: adaptive clipping (Andrew et al. 2021) tracks this quantile of update norms, starting from clip_norm; None: fixed C
    )
    adaptive_clip_lr: float = 0.2  # η: geometric step of C per round (TFF gaussian_adaptive default)
    adaptive_clip_count_stddev: float | None = (
        None  # σ_b of the noised count; None → 0.05·clients_per_round (TFF default); costs part of z: z_sum = (z⁻² − (2σ_b)⁻²)^-½
    )
    client_chunk: int = 1  # clients trained together (vmap); chunks without a sampled client are skipped. 1 is fastest on CPU even with the shared first step (benchmarks/results/fl_round_grid.json: 16 was 2.4x slower); use 16+ on a GPU
    devices: int | None = (
        None  # devices the cohort axis is sharded over (fl/sharding.py); None: all visible, on CPU the package's fixed 2 host devices (keyboard_fl/hostdevices.py): every core, same results on any core count
    )
    eval_every: int = 50  # rounds between quick evaluations logged to metrics.jsonl
    checkpoint_every: int = 25  # rounds between atomic checkpoints
    eval_messages: int = 400  # held-out messages in each quick evaluation
    # Simulated client faults (keyboard_fl/fl/faults.py), applied after Poisson sampling; ε still uses q (conservative).
    dropout_prob: float = 0.0  # each sampled user independently fails to report with this probability
    straggler_deadline: float | None = (
        None  # per-round deadline in simulated seconds; users whose device (speed fixed by seed+user id, median 30 s) is slower don't report. None: no deadline
    )

    def __post_init__(self):
        _positive(self, "bands")
        _positive(
            self,
            "rounds",
            "max_examples",
            "batch_size",
            "local_epochs",
            "client_chunk",
            "eval_every",
            "checkpoint_every",
        )
        _positive(self, "clients_per_round", "client_lr", "server_lr", "clip_norm", real=True)
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be ≥ 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not (isinstance(self.dropout_prob, (int, float)) and 0 <= self.dropout_prob <= 1):
            raise ValueError(f"dropout_prob must be in [0, 1], got {self.dropout_prob!r}")
        if self.straggler_deadline is not None and not (
            isinstance(self.straggler_deadline, (int, float))
            and math.isfinite(self.straggler_deadline)
            and self.straggler_deadline > 0
        ):
            raise ValueError(
                f"straggler_deadline must be > 0 (simulated seconds) or null, got {self.straggler_deadline!r}"
            )
        if self.devices is not None and not (isinstance(self.devices, int) and self.devices >= 1):
            raise ValueError(f"devices must be a positive int or null (all visible devices), got {self.devices!r}")
        _check_privacy_fields(self)
        if self.server_optimizer not in ("sgd", "nesterov", "adam"):
            raise ValueError(f"server_optimizer must be sgd, nesterov or adam, got {self.server_optimizer!r}")

    def sampling_prob(self, population: int) -> float:
        q = self.clients_per_round / population
        if not 0 < q <= 1:
            raise ValueError(
                f"clients_per_round={self.clients_per_round} needs q = {q:.4g} in (0, 1] for a population of {population}"
            )
        return q


_SCHEMES = (
    "poisson",
    "fixed",
    "cyclic",
    "min-separation",
)  # keyboard_fl.privacy.SCHEMES (not imported: jax-free config)


def _check_privacy_fields(cfg: FederatedConfig) -> None:
    """Refuses privacy settings that cannot go together, naming the field (the mechanism checks the rest)."""
    if not (isinstance(cfg.mechanism, str) and cfg.mechanism):
        raise ValueError(f"mechanism must be a mechanism name such as 'dp-fedavg', got {cfg.mechanism!r}")
    if cfg.sampling not in _SCHEMES:
        raise ValueError(f"sampling must be one of {', '.join(_SCHEMES)}, got {cfg.sampling!r}")
    if cfg.accountant not in (None, "pld", "rdp"):
        raise ValueError(f"accountant must be 'pld', 'rdp' or null, got {cfg.accountant!r}")
    if cfg.sampling == "fixed" and cfg.accountant == "pld":
        raise ValueError(
            "accountant='pld' cannot account sampling='fixed' (fixed-size cohorts: replace-one-user DP, "
            "RDP only); use accountant 'rdp' or Poisson sampling"
        )
    if cfg.adaptive_clip_quantile is not None and not (
        isinstance(cfg.adaptive_clip_quantile, (int, float)) and 0 < cfg.adaptive_clip_quantile < 1
    ):
        raise ValueError(f"adaptive_clip_quantile must be in (0, 1) or null, got {cfg.adaptive_clip_quantile!r}")
    if not (
        isinstance(cfg.adaptive_clip_lr, (int, float))
        and math.isfinite(cfg.adaptive_clip_lr)
        and cfg.adaptive_clip_lr > 0
    ):
        raise ValueError(f"adaptive_clip_lr must be > 0, got {cfg.adaptive_clip_lr!r}")
    sb = cfg.adaptive_clip_count_stddev
    if sb is not None and not (isinstance(sb, (int, float)) and math.isfinite(sb) and sb > 0):
        raise ValueError(f"adaptive_clip_count_stddev must be > 0 or null, got {sb!r}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    max_users: int = 250  # held-out users evaluated
    max_messages_per_user: int = 12  # first messages of each held-out user (bounds heavy typists' weight and eval time)
    max_train_user_messages: int = 1000  # held-out (last) messages of training users evaluated
    ksr_messages: int = 100  # held-out messages typed character by character for keystroke savings
    min_targets: int = 5  # users with fewer targets are left out of the per-user distribution
    baseline_users: int = 10_000  # the first training users (source order) pooled by the baselines: the n-gram's text and the central model's rows. Not all N: a million users' text would not fit, and simulated users are exchangeable


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # the one seed: population, init, sampling, noise
    mode: Mode = DP_FEDAVG  # central (pooled, non-private), fedavg, or dp-fedavg
    population: PopulationConfig = PopulationConfig()
    corpus: str | None = (
        None  # private users from a corpus instead of the simulator: a shipped corpus's name (keyboard_fl.data.named), a JSONL file or a per-user directory
    )
    public_corpus: str | None = (
        None  # public text (tokenizer, vocabulary, pretraining): None → the source's own public split; "simulator" → the simulator's public register; else a corpus name/file/directory read whole (keyboard_fl/sources.py)
    )
    skip_bad_lines: bool = False  # corpus only: skip and count malformed lines instead of stopping at the first
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    seq_len: int = 24  # pieces per training row (Stack Overflow NWP: 20 words)
    pretrain: CentralConfig = CentralConfig(
        steps=1500
    )  # public pretraining on the public split before any mode (0 steps: off)
    central: CentralConfig = CentralConfig(steps=3000)
    federated: FederatedConfig = FederatedConfig()
    eval: EvalConfig = EvalConfig()
    canaries: CanaryConfig | None = None  # plant Secret Sharer canaries in training users (memorization audit)
    canary_clients: CanaryClientConfig | None = (
        None  # federated modes: insert canary clients with random-direction updates (empirical ε, keyboard-fl audit)
    )
    phrase_canaries: PhraseCanaryConfig | None = (
        None  # any mode: plant about half of many random phrases, score all by likelihood (empirical ε, keyboard-fl audit)
    )

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        _positive(self, "seq_len")
        if self.canary_clients is not None and self.mode == CENTRAL:
            raise ValueError("canary_clients: central training has no clients; use Secret Sharer canaries (canaries)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "config") -> RunConfig:
        return _from_dict(cls, d, where)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}; corrupt file?)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        return cls.from_dict(d, where=str(path))


def _from_dict(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object for {cls.__name__}, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in d.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        if default is None and name in _OPTIONAL_SECTIONS and value is not None:
            kwargs[name] = _from_dict(_OPTIONAL_SECTIONS[name], value, f"{where}.{name}")
        elif dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


_OPTIONAL_SECTIONS = {
    "canaries": CanaryConfig,
    "canary_clients": CanaryClientConfig,
    "phrase_canaries": PhraseCanaryConfig,
}  # sections that default to None


def _has_defaults(cls) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)


DEFAULT_TRAIN_USERS = (
    1_000_000  # the main job's population (issue 14): production scale; `keyboard-fl main --users N` changes it
)


def preset(name: str, mode: Mode = DP_FEDAVG, seed: int = 0) -> RunConfig:
    """Named configurations: ``tiny`` (tests, seconds), ``default`` (README main job), ``large`` (long runs)."""
    if name == "tiny":
        return RunConfig(
            seed=seed,
            mode=mode,
            population=PopulationConfig(seed=seed, num_train_users=300, num_heldout_users=40, num_public_users=300),
            tokenizer=TokenizerConfig(vocab_size=512),
            model=ModelConfig(vocab_size=512, embed_dim=32, hidden_dim=64),
            seq_len=16,
            pretrain=CentralConfig(steps=20, batch_size=32),
            central=CentralConfig(steps=60, batch_size=32),
            federated=FederatedConfig(
                rounds=6,
                clients_per_round=12,
                max_examples=16,
                batch_size=8,
                eval_every=3,
                checkpoint_every=2,
                eval_messages=40,
                target_epsilon=50.0,
            ),
            eval=EvalConfig(
                max_users=30, max_messages_per_user=10, max_train_user_messages=60, ksr_messages=5, min_targets=1
            ),
        )
    if name == "default":  # a million typists, streamed: only each round's cohort is ever made (train/stream.py)
        return RunConfig(
            seed=seed,
            mode=mode,
            population=PopulationConfig(seed=seed, num_train_users=DEFAULT_TRAIN_USERS),
            # Large cohorts, few rounds: the noise on the average update is z·C/(qN), and at
            # N = 1M, qN = 1,000, T = 40 the ε = 2 noise is ~11x below the old ε = 10 run's
            # (z 0.44 over 64 users). One local step (8 rows, batch 8) keeps 40k updates
            # per run inside the main job's 30 minutes on 2 cores.
            federated=FederatedConfig(
                rounds=40,
                clients_per_round=1000,
                max_examples=8,
                target_epsilon=2.0,
                eval_every=10,
                checkpoint_every=10,
            ),
        )
    if name == "corpus":
        return corpus_preset(seed, mode)
    if name == "large":
        return RunConfig(
            seed=seed,
            mode=mode,
            population=PopulationConfig(seed=seed, num_train_users=100_000),
            tokenizer=TokenizerConfig(vocab_size=4096),
            model=ModelConfig(vocab_size=4096, embed_dim=96, hidden_dim=670),
            central=CentralConfig(steps=20000),
            federated=FederatedConfig(rounds=1500, clients_per_round=1000, eval_every=50, checkpoint_every=50),
        )
    raise ValueError(f"unknown preset {name!r}: choose {', '.join(PRESETS)}")


def corpus_preset(seed: int = 0, mode: Mode = DP_FEDAVG) -> RunConfig:
    """Real text (``--corpus``, issue 14): a recipe that scales to the data instead of fixed steps.

    Central training and pretraining run a number of epochs over the rows they
    get (capped), warm up then cosine-decay the learning rate, and stop on a
    validation split of users (the best checkpoint is kept). The model stays in
    the phone budget (≤ 1.5M parameters). Federated: a cohort of ~10% of a
    thousand-user corpus a round.
    """
    return RunConfig(
        seed=seed,
        mode=mode,
        population=PopulationConfig(seed=seed, num_train_users=10_000),  # only read with --public-corpus simulator
        model=ModelConfig(embed_dim=96, hidden_dim=512),  # 2,048 pieces, 544,256 parameters (Gboard: 1.4M)
        pretrain=CentralConfig(
            steps=3000, epochs=4.0, warmup_steps=50, validation_fraction=0.1, validate_every=100, patience=2
        ),
        central=CentralConfig(
            steps=8000, epochs=3.0, warmup_steps=200, validation_fraction=0.05, validate_every=500, patience=2
        ),
        federated=FederatedConfig(
            rounds=100,  # ~10 participations per user at 100 a round over ~1,000 users
            clients_per_round=100,
            max_examples=16,
            target_epsilon=10.0,  # a thousand users cannot buy ε = 2 at useful noise; reported as measured
            eval_every=25,
            checkpoint_every=25,
        ),
    )


PRESETS = ("tiny", "default", "corpus", "large")
