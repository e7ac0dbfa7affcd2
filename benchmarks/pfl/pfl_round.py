"""Seconds per DP-FedAvg round in pfl-research 0.6 (PyTorch backend) on the benchmark task.

Runs in the isolated pfl venv (``benchmarks/pfl/setup.sh``); never imports
keyboard_fl. It is the pfl half of ``benchmarks/bench_throughput.py``, which
runs keyboard_fl's round (and TFF's, ``benchmarks/tff/tff_round.py``) at
exactly the same shapes. pfl (Granqvist et al. 2024, "pfl-research:
simulation framework for accelerating research in Private Federated
Learning", arXiv 2404.06430) simulates a cohort in one process, user after
user, each user's local training in eager PyTorch.

* model: keyboard_fl's CIFG-LSTM in PyTorch (the same as TFF's Keras
  ``--cell cifg``): embedding [V, E] tied to the softmax, input gates
  ``x W_in + b`` for all tokens up front, a Python loop over the ``T`` steps of
  the coupled-gate cell (f = 1 − i; gates i, g, o) with recurrence from the
  projected output, projection [H → E]. Same parameters, same matmul FLOPs;
* data: ``cohort`` users, each ``--seqs`` sequences of ``--seq-len`` tokens
  (+1 for the target), Zipf ids drawn as tff_round.py draws them; one local
  epoch of batches of ``--batch``;
* algorithm: ``FederatedAveraging`` with local SGD (lr 1.0), central Adam
  (lr 0.005, betas 0.9/0.99, eps 1e-3) and user-level DP as pfl does it:
  ``CentrallyAppliedPrivacyMechanism(GaussianMechanism(C, z))`` clips each
  user's update to L2 norm C and adds N(0, (zC)²) to the sum; the cohort is
  every user (``train_cohort_size`` = cohort), the average is over the cohort.

Timing: ``first_round_s`` is the first central iteration, then ``--rounds``
timed ones (a callback stamps each); ``sec_per_round`` is their median.
Prints one line ``PFL_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch
from pfl.aggregate.simulate import SimulatedBackend
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.callback.base import TrainingProcessCallback
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.metrics import Metrics, Weighted
from pfl.model.pytorch import PyTorchModel
from pfl.privacy import CentrallyAppliedPrivacyMechanism, GaussianMechanism

FIRST_ID = 4  # ids 0..3 are specials in keyboard_fl's tokenizer


class CifgLM(torch.nn.Module):
    """keyboard_fl's CIFG-LSTM with tied softmax, in PyTorch (logits [B, T, V])."""

    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        v, e, h = vocab, embed, hidden
        self.hidden, self.embed = h, e
        self.embedding = torch.nn.Parameter(torch.randn(v, e) * e**-0.5)
        self.w_input = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(e, 3 * h)))
        self.w_recurrent = torch.nn.Parameter(torch.nn.init.orthogonal_(torch.empty(e, 3 * h)))
        self.gate_bias = torch.nn.Parameter(torch.cat([-torch.ones(h), torch.zeros(2 * h)]))
        self.w_projection = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(h, e)))
        self.output_bias = torch.nn.Parameter(torch.zeros(v))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        g = self.embedding[tokens] @ self.w_input + self.gate_bias  # [B, T, 3H], all tokens at once
        c = tokens.new_zeros((b, self.hidden), dtype=torch.float32)
        h = tokens.new_zeros((b, self.embed), dtype=torch.float32)
        outs = []
        for s in range(t):
            zi, zg, zo = (g[:, s] + h @ self.w_recurrent).chunk(3, dim=-1)
            i = torch.sigmoid(zi)
            c = (1.0 - i) * c + i * torch.tanh(zg)
            h = (torch.sigmoid(zo) * torch.tanh(c)) @ self.w_projection
            outs.append(h)
        return torch.stack(outs, 1) @ self.embedding.T + self.output_bias

    def loss(self, x, y, eval=False):  # noqa: A002  (pfl's interface)
        self.eval() if eval else self.train()
        logits = self(x)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def metrics(self, x, y, eval=False):  # noqa: A002
        loss = self.loss(x, y, eval=eval).item()
        return {"loss": Weighted(loss * y.numel(), y.numel())}


class Stamps(TrainingProcessCallback):
    """Wall time at the end of each central iteration."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def on_train_begin(self, *, model):
        self.times = [time.perf_counter()]
        return Metrics()

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        self.times.append(time.perf_counter())
        return False, Metrics()


def user_rows(args) -> np.ndarray:
    rng = np.random.default_rng(args.seed)
    rows = (rng.zipf(1.2, size=(args.cohort, args.seqs, args.seq_len + 1)) % (args.vocab - FIRST_ID)) + FIRST_ID
    return rows.astype(np.int64)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--cohort", type=int, default=64)
    p.add_argument("--seqs", type=int, default=64, help="sequences per user")
    p.add_argument("--seq-len", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
    p.add_argument("--clip", type=float, default=0.5)
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--client-lr", type=float, default=1.0)
    p.add_argument("--server-lr", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, one per core)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    rows = torch.from_numpy(user_rows(args))
    users = [str(u) for u in range(args.cohort)]
    data = {u: Dataset((rows[i, :, :-1], rows[i, :, 1:]), user_id=u) for i, u in enumerate(users)}
    order = iter(np.tile(np.arange(args.cohort), args.rounds + 1))  # every user, every round

    train = FederatedDataset(data.__getitem__, lambda: users[next(order)])
    net = CifgLM(args.vocab, args.embed, args.hidden)
    model = PyTorchModel(
        model=net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.Adam(net.parameters(), lr=args.server_lr, betas=(0.9, 0.99), eps=1e-3),
    )
    dp = CentrallyAppliedPrivacyMechanism(GaussianMechanism(args.clip, args.noise_multiplier))
    backend = SimulatedBackend(training_data=train, val_data=None, postprocessors=[dp])
    stamps = Stamps()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=args.rounds + 1,
            evaluation_frequency=10**9,
            train_cohort_size=args.cohort,
            val_cohort_size=0,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=args.client_lr, local_num_epochs=args.epochs, local_batch_size=args.batch
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=args.batch),
        callbacks=[stamps],
        send_metrics_to_platform=False,
    )
    laps = np.diff(stamps.times).tolist()
    first, times = laps[0], laps[1:]
    sec = statistics.median(times) if times else first
    v, e, h = args.vocab, args.embed, args.hidden
    fpt = 2 * (e * 3 * h + e * 3 * h + h * e + e * v)
    tokens = args.cohort * args.epochs * args.seqs * args.seq_len
    import importlib.metadata as md

    result = {
        "framework": "pfl",
        "pfl": md.version("pfl"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "num_params": int(sum(x.numel() for x in net.parameters())),
        "cohort": args.cohort,
        "seqs_per_client": args.seqs,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "local_epochs": args.epochs,
        "clip": args.clip,
        "noise_multiplier": args.noise_multiplier,
        "aggregator": "CentrallyAppliedPrivacyMechanism(GaussianMechanism(C, z)): per-user clip, Gaussian noise on the sum",
        "algorithm": "pfl FederatedAveraging, local SGD, central Adam, SimulatedBackend (one process)",
        "first_round_s": round(first, 3),
        "sec_per_round": round(sec, 4),
        "round_times_s": [round(t, 4) for t in times],
        "client_updates_per_s": round(args.cohort / sec, 3),
        "tokens_per_s": round(tokens / sec, 1),
        "tokens_per_round": tokens,
        "fwd_matmul_flops_per_token": fpt,
        "train_matmul_flops_per_round": 3 * fpt * tokens,
        "achieved_flops_per_s": round(3 * fpt * tokens / sec, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_end": list(os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    print("PFL_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
