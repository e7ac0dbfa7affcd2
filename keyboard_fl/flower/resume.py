"""Server-side checkpoints of the Flower strategy, so a run survives a SuperLink restart.

What Flower 1.42 does (measured, ``tests/test_flower_faults.py``): a SuperLink
started with ``--database FILE`` keeps its SuperNodes, runs and messages
across a restart, and the SuperNodes reconnect by themselves. The ServerApp
of the run in flight does not survive: it is a child of the SuperLink's
SuperExec, which exits with its parent; the restarted SuperLink marks the run
failed ("No heartbeat received from the task") and does not start it again.

So the strategy writes, after every round and before the new model is
evaluated or sent to anyone, a verified checkpoint (:mod:`keyboard_fl.checkpoint`)
of the server state (params, optimizer and mechanism state), the privacy
ledger and the history to ``run-dir/state/``. A new ``flwr run`` with
``resume = true`` and the same ``run-dir`` continues from the last round
checkpointed, with the same per-round sampling and noise keys an
uninterrupted run would use (the strategy's ``round_offset``). ε is charged
once per released round: a round cut off before its aggregate was computed
released nothing and is run again; the ledger comes back with the rounds it
had counted.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from keyboard_fl import checkpoint
from keyboard_fl.privacy import PrivacyLedger

__all__ = ["STATE_DIR", "restore", "save"]

STATE_DIR = "state"  # under run-dir


def _tree(strategy):
    s = strategy.state
    return (s.params, s.opt_state, s.mech_state)


def save(strategy, run_dir: str | Path, server_round: int) -> None:
    """Checkpoint ``strategy`` after its round ``server_round`` (the run's round, offset included)."""
    meta = {"round": server_round, "ledger": strategy.ledger.to_dict(), "history": strategy.history}
    checkpoint.save(Path(run_dir) / STATE_DIR, server_round, jax.device_get(_tree(strategy)), meta, keep=2)


def restore(strategy, run_dir: str | Path) -> int:
    """Loads the newest good checkpoint into ``strategy`` and returns its round (0: none, nothing changed).

    Refuses a checkpoint whose ledger disagrees with its round or with the
    strategy's mechanism (another run's state).
    """
    d = Path(run_dir) / STATE_DIR
    found = checkpoint.load_latest(d, jax.device_get(_tree(strategy)))
    if found is None:
        return 0
    start, (params, opt_state, mech_state), meta = found
    ledger = PrivacyLedger.from_dict(meta["ledger"])
    if ledger.rounds != start:
        raise checkpoint.CheckpointError(f"{d}: ledger has {ledger.rounds} rounds, checkpoint {start}")
    if ledger.mechanism != strategy.ledger.mechanism:
        raise checkpoint.CheckpointError(
            f"{d}: checkpoint was written by mechanism {ledger.mechanism}, this run uses {strategy.ledger.mechanism}"
        )
    strategy.state = strategy.state._replace(
        params=params, opt_state=opt_state, mech_state=mech_state, round=jnp.asarray(start, jnp.int32)
    )
    strategy.ledger = ledger
    strategy.history = list(meta["history"])
    strategy.round_offset = start
    return start
