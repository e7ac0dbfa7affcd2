"""Request micro-batching: the requests that arrive within a few milliseconds share one model call.

A suggestion costs little model work but a fixed overhead per call (dispatch,
host↔device copies, Python); served one at a time, 50 typists queue behind
each other. :class:`MicroBatcher` gives each model one worker thread: it takes
the first waiting request, waits until it is ``window_ms`` old for more (up to
``max_batch``), and answers them all with one batched call
(:meth:`keyboard_fl.suggest.Suggester.suggest_many`). While a batch runs the
next one gathers, so under load the batch size follows the load and a lone
request waits at most ``window_ms``. This is dynamic batching as in serving
systems (Crankshaw et al. 2017, "Clipper", NSDI; Olston et al. 2017,
"TensorFlow-Serving").

Privacy (DESIGN.md §3): a request's text lives only in the queue until its
batch is answered; a failure is logged by exception type only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    window_ms: float = 1.0  # longest a request waits for company; a lone key press pays at most this
    max_batch: int = 64  # rows per model call; bounds the compiled shapes (powers of two up to this)


class MicroBatcher(Generic[T, R]):
    """Answers items with ``fn(batch) -> results`` (same order), batching those that arrive together.

    ``fn`` runs on one worker thread, so it is never called concurrently (a
    suggester's caches need not be thread-safe). If a batch fails, its items
    are retried one by one so that one bad item fails alone.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], config: BatchConfig = BatchConfig(), name: str = ""):
        self.fn, self.config = fn, config
        self._queue: deque[tuple[T, Future, float]] = deque()  # (item, its future, arrival time)
        self._cond = threading.Condition()
        self.batches = self.items = 0  # counters for tests and benchmarks: mean batch = items / batches
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future:
        """A future of ``item``'s result."""
        fut: Future = Future()
        with self._cond:
            self._queue.append((item, fut, time.monotonic()))
            self._cond.notify()
        return fut

    async def __call__(self, item: T) -> R:
        """``item``'s result, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def _take(self) -> list[tuple[T, Future]]:
        """The next batch: the first waiting item and whatever arrives until it is ``window_ms`` old.

        Under load the first item has waited longer than that already (behind the
        previous batch), so the batch leaves at once with everything queued.
        """
        cfg = self.config
        with self._cond:
            while not self._queue:
                self._cond.wait()
            deadline = self._queue[0][2] + cfg.window_ms / 1e3
            while len(self._queue) < cfg.max_batch and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            n = min(len(self._queue), cfg.max_batch)
            return [self._queue.popleft()[:2] for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = [(x, f) for x, f in self._take() if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            try:
                results = self.fn([x for x, _ in batch])
                for (_, f), r in zip(batch, results, strict=True):
                    f.set_result(r)
            except Exception:  # noqa: BLE001 - retried one by one below
                self._one_by_one(batch)

    def _one_by_one(self, batch: list[tuple[T, Future]]) -> None:
        for x, f in batch:
            if f.done():
                continue
            try:
                f.set_result(self.fn([x])[0])
            except Exception as e:  # noqa: BLE001 - the caller reports it (by type: it may quote the text)
                log.error("batched call failed: %s", type(e).__name__)
                f.set_exception(e)


__all__ = ["BatchConfig", "MicroBatcher"]
