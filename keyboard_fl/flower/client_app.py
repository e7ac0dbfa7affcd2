"""The Flower ClientApp: one device = one user, local training, clipping on the device.

A SuperNode stands for one phone. Its ``--node-config`` names the directory of
the user's local corpus (``data-dir=...``, written by
:func:`keyboard_fl.data.materialize`: ``train.jsonl`` with exactly one user,
optional ``test.jsonl``) and, for logs only, its ``partition-id``.

On a ``train`` message the app

1. reads and tokenizes the local messages (the text never leaves this
   function; the public tokenizer comes from the run config),
2. lays them out, following the :class:`~keyboard_fl.flower.task.LocalTask`
   the server sends with the message, as fixed-shape local steps (:func:`keyboard_fl.train.examples.client_steps`,
   shuffled with a key derived from the seed, the user id and the round),
3. runs our client update from the received server parameters
   (:func:`keyboard_fl.fl.client.client_update`, local SGD under ``lax.scan``),
4. clips the whole delta to L2 norm ``C`` (:func:`keyboard_fl.privacy.clip_update`)
   **on the device**, in the same jitted function,

and replies with the clipped delta (``"arrays"``) and a ``MetricRecord``
(``"metrics"``: ``num-examples``, ``num-tokens``, ``train-loss``, ``clipped``).
Those metrics are *un-noised* per-user diagnostics, like ``RoundMetrics`` in
:mod:`keyboard_fl.fl.round`: fine on a loopback test, but a deployment that
cares about them must drop them or aggregate them privately; only the
clipped delta enters the DP aggregate.

With ``secagg = true`` in the run config, :func:`keyboard_fl.flower.secagg.device_mod`
wraps ``train`` in Flower's ``secaggplus_mod``: the device also clips to
``C' < C`` (room for the quantization rounding), and replies with a masked,
quantized vector of weight 1 and no metrics (see :mod:`keyboard_fl.flower.secagg`).

An ``evaluate`` message returns the local next-piece loss on the user's own
held-out (last) messages.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from keyboard_fl.data import MaterializedSource, User
from keyboard_fl.fl.client import client_update
from keyboard_fl.flower.secagg import device_mod
from keyboard_fl.flower.task import (
    FlowerSettings,
    LocalTask,
    abstract_model,
    arrays_to_params,
    enable_compilation_cache,
    params_to_arrays,
)
from keyboard_fl.models import make_loss_fn
from keyboard_fl.privacy.clipping import clip_update
from keyboard_fl.rng import Stream, generator, user_hash
from keyboard_fl.tokenizer import Tokenizer
from keyboard_fl.train.examples import as_batch, client_steps, user_rows

__all__ = ["app", "local_user", "train_on_device"]

app = ClientApp()


def local_user(context: Context) -> User:
    """The one user whose corpus lives in this SuperNode's ``data-dir``."""
    data_dir = context.node_config.get("data-dir")
    if not data_dir:
        raise ValueError(
            "this SuperNode has no 'data-dir' in its --node-config (e.g. --node-config \"data-dir='/path' partition-id=0\")"
        )
    users = list(MaterializedSource(Path(str(data_dir))).users("train"))
    if len(users) != 1:
        raise ValueError(f"{data_dir}: one SuperNode is one user's device, found {len(users)} users in train.jsonl")
    return users[0]


@functools.lru_cache(maxsize=2)
def _setup(tokenizer_path: str, jax_cache: str, clip_norm: float, task: LocalTask):
    """Tokenizer, wire template, loss and the jitted ``train_and_clip`` (once per process)."""
    enable_compilation_cache(jax_cache)
    if not tokenizer_path:
        raise ValueError("run config 'tokenizer' is empty: give the path of the public SentencePiece model")
    tokenizer = Tokenizer.load(tokenizer_path)
    if tokenizer.vocab_size != task.model.vocab_size:
        raise ValueError(
            f"{tokenizer_path}: {tokenizer.vocab_size} pieces, the server's model has {task.model.vocab_size}"
        )
    graphdef, template = abstract_model(task.model)
    loss_fn = make_loss_fn(graphdef)

    @jax.jit
    def train_and_clip(params, batches, key):
        delta, metrics = client_update(params, batches, key, loss_fn=loss_fn, client_opt=task.client_lr)
        clipped, norm = clip_update(delta, clip_norm)  # on the device: the raw delta never leaves
        return clipped, norm, metrics

    return tokenizer, template, loss_fn, train_and_clip


def _setup_for(settings: FlowerSettings, task: LocalTask):
    return _setup(settings.tokenizer, settings.jax_cache, settings.clip_norm, task)


def train_on_device(settings: FlowerSettings, task: LocalTask, user: User, params, server_round: int):
    """Local update of ``user`` from ``params``: ``(clipped_delta, metrics dict)``."""
    tokenizer, _, _, train_and_clip = _setup_for(settings, task)
    rows = user_rows(tokenizer, user.train, task.seq_len)
    rng = generator(task.seed, Stream.FLOWER_CLIENT, server_round, user_hash(user.user_id))
    steps = client_steps(
        rows, batch_size=task.batch_size, max_examples=task.max_examples, epochs=task.local_epochs, rng=rng
    )
    key = jax.random.key(int(rng.integers(2**31)))
    clipped, norm, m = train_and_clip(params, as_batch(steps), key)
    if not np.isfinite(float(norm)):
        raise FloatingPointError("local update is not finite; nothing is sent")
    metrics = {
        "num-examples": int(min(len(rows), task.max_examples)),
        "num-tokens": float(m.num_tokens),
        "train-loss": float(m.train_loss),
        "clipped": float(float(norm) > settings.clip_norm),
    }
    return jax.device_get(clipped), metrics


@app.train(mods=[device_mod])  # SecAgg+ when the run config says secagg = true, else a pass-through
def train(msg: Message, context: Context) -> Message:
    settings = FlowerSettings.from_run_config(context.run_config)
    config = msg.content["config"]
    task = LocalTask.from_config(config)
    _, template, _, _ = _setup_for(settings, task)
    params = arrays_to_params(msg.content["arrays"], template)
    clipped, metrics = train_on_device(settings, task, local_user(context), params, int(config["server-round"]))
    content = RecordDict({"arrays": params_to_arrays(clipped), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    settings = FlowerSettings.from_run_config(context.run_config)
    task = LocalTask.from_config(msg.content["config"])
    tokenizer, template, loss_fn, _ = _setup_for(settings, task)
    params = arrays_to_params(msg.content["arrays"], template)
    rows = user_rows(tokenizer, local_user(context).test, task.seq_len)
    if len(rows):
        loss, n = jax.jit(loss_fn)(params, as_batch(rows))
        metrics = {"eval-loss": float(loss), "num-examples": float(n)}
    else:
        metrics = {"eval-loss": 0.0, "num-examples": 0.0}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
