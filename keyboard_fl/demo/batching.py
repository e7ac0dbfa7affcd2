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

The hand-off costs little per request, because a server answers hundreds a
second on one core: an awaiting request is an asyncio future of its own event
loop (no ``concurrent.futures.Future`` and ``wrap_future`` pair), the worker
sleeps through the window instead of waking at every arrival, and a batch's
answers reach each event loop in one ``call_soon_threadsafe`` (one wake-up of
the loop per batch, not per request).

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

Waiter = Future | asyncio.Future  # a concurrent future (submit) or an event loop's future (await)


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
        self._queue: deque[tuple[T, Waiter, float]] = deque()  # (item, its waiter, arrival time)
        self._cond = threading.Condition()
        self.batches = self.items = 0  # counters for tests and benchmarks: mean batch = items / batches
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: T, waiter: Waiter) -> None:
        with self._cond:
            self._queue.append((item, waiter, time.monotonic()))
            if len(self._queue) == 1:  # the worker sleeps only on an empty queue
                self._cond.notify()

    def submit(self, item: T) -> Future:
        """A future of ``item``'s result (for callers outside an event loop)."""
        fut: Future = Future()
        self._put(item, fut)
        return fut

    async def __call__(self, item: T) -> R:
        """``item``'s result, awaited without blocking the event loop."""
        fut = asyncio.get_running_loop().create_future()
        self._put(item, fut)
        return await fut

    def _take(self) -> list[tuple[T, Waiter]]:
        """The next batch: the first waiting item and whatever arrives until it is ``window_ms`` old.

        Under load the first item has waited longer than that already (behind the
        previous batch), so the batch leaves at once with everything queued.
        """
        cfg = self.config
        with self._cond:
            while not self._queue:
                self._cond.wait()
            left = self._queue[0][2] + cfg.window_ms / 1e3 - time.monotonic()
            full = len(self._queue) >= cfg.max_batch
        if left > 0 and not full:
            time.sleep(left)  # arrivals meanwhile only queue: no wake-up per request
        with self._cond:
            n = min(len(self._queue), cfg.max_batch)
            return [self._queue.popleft()[:2] for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = [(x, w) for x, w in self._take() if _claim(w)]
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            try:
                results = self.fn([x for x, _ in batch])
                if len(results) != len(batch):
                    raise ValueError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception:  # noqa: BLE001 - retried one by one below
                _deliver([(w, *self._one(x)) for x, w in batch])
            else:
                _deliver([(w, r, None) for (_, w), r in zip(batch, results, strict=True)])

    def _one(self, x: T) -> tuple[R | None, BaseException | None]:
        try:
            return self.fn([x])[0], None
        except Exception as e:  # noqa: BLE001 - the caller reports it (by type: it may quote the text)
            log.error("batched call failed: %s", type(e).__name__)
            return None, e


def _claim(w: Waiter) -> bool:
    """False when the waiter gave up (cancelled) before its batch ran: its item is skipped."""
    return w.set_running_or_notify_cancel() if isinstance(w, Future) else not w.cancelled()


def _deliver(answers: list[tuple[Waiter, object, BaseException | None]]) -> None:
    """Resolve each waiter: concurrent futures here, asyncio futures on their loop (one wake-up per loop)."""
    per_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for w, r, e in answers:
        if not isinstance(w, Future):
            per_loop.setdefault(w.get_loop(), []).append((w, r, e))
        elif e is not None:
            w.set_exception(e)
        else:
            w.set_result(r)
    for loop, group in per_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, group)
        except RuntimeError:  # the loop closed meanwhile: nobody awaits these any more
            pass


def _resolve(group: list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
    for w, r, e in group:
        if w.done():  # a request cancelled meanwhile (client gone) is skipped
            continue
        if e is not None:
            w.set_exception(e)
        else:
            w.set_result(r)


__all__ = ["BatchConfig", "MicroBatcher"]
