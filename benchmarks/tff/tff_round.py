"""Seconds per DP-FedAvg round in TensorFlow Federated 0.87 on the benchmark task.

Runs in the isolated TFF venv (``benchmarks/tff/setup.sh``); never imports
keyboard_fl. It is the TFF half of ``benchmarks/bench_throughput.py``, which
runs keyboard_fl's round at exactly the same shapes:

* model (``--cell cifg``, the default): keyboard_fl's CIFG-LSTM written in
  Keras: embedding [V, E] tied to the softmax, input gates ``x W_in + b``
  computed for all tokens up front, a ``keras.layers.RNN`` over a custom cell
  with coupled input/forget gate (f = 1 − i; gates i, g, o), recurrence from
  the projected output ``h`` [E] and a projection ``m W_proj`` [H → E]. Same
  parameters, same shapes, same matmul FLOPs as ours.
  ``--cell lstm``: the stock ``keras.layers.LSTM`` (4 gates, no coupling, no
  projection; recurrence from its own H' units), followed by a Dense H' → E
  projection and the same tied softmax, with H' (``--lstm-units``, default
  chosen here) giving the parameter count closest to the CIFG model's;
* data: ``cohort`` clients, each ``--seqs`` sequences of ``--seq-len`` tokens
  (+1 for the shifted target), Zipf token ids, batched by ``--batch``, one
  local epoch (``tf.data`` per client, as TFF expects);
* algorithm: ``tff.learning.algorithms.build_unweighted_fed_avg`` with client
  SGD (lr 1.0), server Adam (lr 0.005, b2 0.99, eps 1e-3: keyboard_fl's
  FedAdam defaults) and ``DifferentiallyPrivateFactory.gaussian_fixed``
  (clip C, noise multiplier z, denominator ``clients_per_round`` = cohort) as
  the model aggregator: the same DP-FedAvg as keyboard_fl's round.

Timing: ``build_s`` (build the process + ``initialize``), ``first_round_s``
(the first ``next``: tracing/compilation by TFF's C++ executor + one round),
then ``--rounds`` timed rounds; ``sec_per_round`` is their median. Memory:
RSS of this process plus the ``worker_binary`` processes TFF starts, sampled
after every round (max reported).

Prints one line ``TFF_RESULT {json}`` (and writes ``--out`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

FIRST_ID = 4  # ids 0..3 are specials (pad, bos, eos, unk) in keyboard_fl's tokenizer


def stop_tff_workers() -> None:
    """Ends the ``worker_binary`` children TFF started for this process (they
    outlive the interpreter and hold the caller's stdout open)."""
    if psutil is None:
        return
    for child in psutil.Process().children(recursive=True):
        try:
            if "worker_binary" in " ".join(child.cmdline()):
                child.terminate()
        except psutil.Error:
            pass


def rss_bytes() -> dict:
    """RSS of this process and of its TFF worker children."""
    if psutil is None:
        return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "workers": 0}
    me = psutil.Process()
    workers = 0
    for child in me.children(recursive=True):
        try:
            workers += child.memory_info().rss
        except psutil.Error:
            pass
    return {"self": me.memory_info().rss, "workers": workers}


# ---------------------------------------------------------------- the model


class CifgCell(tf.keras.layers.Layer):
    """keyboard_fl's CIFG cell: input gates precomputed; state (c [H], h [E])."""

    def __init__(self, hidden: int, embed: int, **kw):
        super().__init__(**kw)
        self.hidden, self.embed = hidden, embed
        self.state_size = [hidden, embed]
        self.output_size = embed

    def build(self, input_shape):
        h, e = self.hidden, self.embed
        self.w_recurrent = self.add_weight(name="w_recurrent", shape=(e, 3 * h), initializer="orthogonal")
        self.w_projection = self.add_weight(name="w_projection", shape=(h, e), initializer="glorot_uniform")
        self.built = True

    def call(self, x_gates, states):
        c, h = states
        z = x_gates + tf.matmul(h, self.w_recurrent)
        zi, zg, zo = tf.split(z, 3, axis=-1)
        i = tf.sigmoid(zi)
        c = (1.0 - i) * c + i * tf.tanh(zg)
        m = tf.sigmoid(zo) * tf.tanh(c)
        h = tf.matmul(m, self.w_projection)
        return h, [c, h]


class TiedLM(tf.keras.layers.Layer):
    """Embedding → recurrent body → tied softmax (logits [B, T, V])."""

    def __init__(self, vocab: int, embed: int, hidden: int, cell: str, lstm_units: int, **kw):
        super().__init__(**kw)
        self.vocab, self.embed, self.hidden, self.cell, self.lstm_units = vocab, embed, hidden, cell, lstm_units
        if cell == "cifg":
            self.rnn = tf.keras.layers.RNN(CifgCell(hidden, embed), return_sequences=True)
        else:
            self.rnn = tf.keras.layers.LSTM(lstm_units, return_sequences=True)
            self.proj = tf.keras.layers.Dense(embed, use_bias=False)

    def build(self, input_shape):
        v, e, h = self.vocab, self.embed, self.hidden
        self.embedding = self.add_weight(
            name="embedding", shape=(v, e), initializer=tf.keras.initializers.RandomNormal(stddev=e**-0.5)
        )
        if self.cell == "cifg":
            self.w_input = self.add_weight(name="w_input", shape=(e, 3 * h), initializer="glorot_uniform")
            self.gate_bias = self.add_weight(
                name="gate_bias",
                shape=(3 * h,),
                initializer=tf.keras.initializers.Constant(np.concatenate([-np.ones(h), np.zeros(2 * h)])),
            )
        self.output_bias = self.add_weight(name="output_bias", shape=(v,), initializer="zeros")
        self.built = True

    def call(self, tokens):
        x = tf.gather(self.embedding, tokens)  # [B, T, E]
        if self.cell == "cifg":
            g = tf.einsum("bte,eg->btg", x, self.w_input) + self.gate_bias  # [B, T, 3H], all tokens at once
            out = self.rnn(g)  # [B, T, E]
        else:
            out = self.proj(self.rnn(x))
        return tf.einsum("bte,ve->btv", out, self.embedding) + self.output_bias


def keras_model(args) -> tf.keras.Model:
    tokens = tf.keras.Input(shape=(args.seq_len,), dtype=tf.int32)
    logits = TiedLM(args.vocab, args.embed, args.hidden, args.cell, args.lstm_units)(tokens)
    return tf.keras.Model(tokens, logits)


def matched_lstm_units(v: int, e: int, h: int) -> int:
    """Keras LSTM width H' whose LSTM + projection has as many parameters as the CIFG body."""
    cifg_body = 2 * e * 3 * h + 3 * h + h * e
    lstm_body = lambda u: 4 * u * (e + u + 1) + u * e  # noqa: E731
    return min(range(1, 4 * h), key=lambda u: abs(lstm_body(u) - cifg_body))


def matmul_flops_per_token(args) -> int:
    """Forward matmul FLOPs per token (2 per multiply-add); training ≈ 3× this."""
    v, e, h = args.vocab, args.embed, args.hidden
    if args.cell == "cifg":
        return 2 * (e * 3 * h + e * 3 * h + h * e + e * v)
    u = args.lstm_units
    return 2 * (e * 4 * u + u * 4 * u + u * e + e * v)


# ---------------------------------------------------------------- data + round


def client_datasets(args):
    rng = np.random.default_rng(args.seed)
    rows = (rng.zipf(1.2, size=(args.cohort, args.seqs, args.seq_len + 1)) % (args.vocab - FIRST_ID)) + FIRST_ID
    rows = rows.astype(np.int32)
    return [
        tf.data.Dataset.from_tensor_slices((r[:, :-1], r[:, 1:])).batch(args.batch) for r in rows for _ in range(1)
    ], rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--cell", choices=["cifg", "lstm"], default="cifg")
    p.add_argument("--lstm-units", type=int, default=None, help="--cell lstm: default matches the CIFG parameter count")
    p.add_argument("--cohort", type=int, default=64)
    p.add_argument("--seqs", type=int, default=64, help="sequences per client")
    p.add_argument("--seq-len", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
    p.add_argument("--clip", type=float, default=0.5)
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--client-lr", type=float, default=1.0)
    p.add_argument("--server-lr", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.lstm_units is None:
        args.lstm_units = matched_lstm_units(args.vocab, args.embed, args.hidden)
    try:
        run(args)
    finally:
        stop_tff_workers()


def run(args) -> None:
    t_start = time.perf_counter()
    datasets, _ = client_datasets(args)
    if args.epochs > 1:
        datasets = [d.repeat(args.epochs) for d in datasets]
    element_spec = datasets[0].element_spec
    probe = keras_model(args)
    num_params = int(probe.count_params())

    def model_fn():
        return tff.learning.models.from_keras_model(
            keras_model(args),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=element_spec,
        )

    aggregator = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        noise_multiplier=args.noise_multiplier, clients_per_round=float(args.cohort), clip=args.clip
    )
    t0 = time.perf_counter()
    process = tff.learning.algorithms.build_unweighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=args.client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_adam(
            learning_rate=args.server_lr, beta_1=0.9, beta_2=0.99, epsilon=1e-3
        ),
        model_aggregator=aggregator,
    )
    state = process.initialize()
    build_s = time.perf_counter() - t0
    rss_max = rss_bytes()

    def one_round(state):
        t0 = time.perf_counter()
        out = process.next(state, datasets)
        dt_ = time.perf_counter() - t0
        r = rss_bytes()
        for k in rss_max:
            rss_max[k] = max(rss_max[k], r[k])
        return out, dt_

    out, first = one_round(state)
    state = out.state
    times, losses = [], []
    for _ in range(args.rounds):
        out, dt_ = one_round(state)
        state = out.state
        times.append(dt_)
        losses.append(float(out.metrics["client_work"]["train"]["loss"]))
    sec = statistics.median(times) if times else first
    tokens = args.cohort * args.seqs * args.seq_len * args.epochs
    fpt = matmul_flops_per_token(args)
    result = {
        "framework": "tff",
        "tff": tff.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "cell": args.cell,
        "lstm_units": args.lstm_units if args.cell == "lstm" else None,
        "vocab": args.vocab,
        "embed": args.embed,
        "hidden": args.hidden,
        "num_params": num_params,
        "cohort": args.cohort,
        "seqs_per_client": args.seqs,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "local_epochs": args.epochs,
        "clip": args.clip,
        "noise_multiplier": args.noise_multiplier,
        "aggregator": "DifferentiallyPrivateFactory.gaussian_fixed (unweighted, denominator = cohort)",
        "algorithm": "tff.learning.algorithms.build_unweighted_fed_avg, client SGD, server Adam",
        "build_s": round(build_s, 3),
        "first_round_s": round(first, 3),
        "sec_per_round": round(sec, 4),
        "round_times_s": [round(t, 4) for t in times],
        "client_updates_per_s": round(args.cohort / sec, 3),
        "tokens_per_s": round(tokens / sec, 1),
        "tokens_per_round": tokens,
        "fwd_matmul_flops_per_token": fpt,
        "train_matmul_flops_per_round": 3 * fpt * tokens,
        "achieved_flops_per_s": round(3 * fpt * tokens / sec, 1),
        "train_loss": losses,
        "peak_rss_self_mb": round(rss_max["self"] / 2**20, 1),
        "peak_rss_workers_mb": round(rss_max["workers"] / 2**20, 1),
        "peak_rss_total_mb": round((rss_max["self"] + rss_max["workers"]) / 2**20, 1),
        "ru_maxrss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_end": list(os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    line = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print("TFF_RESULT " + line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
