"""Request micro-batching (keyboard_fl.demo.batching) and the batched suggestion call it drives."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from keyboard_fl.demo.batching import BatchConfig, MicroBatcher

TEXTS = ["", "s", "see yo", "see you ", "see you tomorrow at the st", "thanks so much for your help today"]
TEXTS += ["i", "i ", "what time does the mo", "x" * 20, "déjà vu ", "are you coming to the party tonight"]


def test_concurrent_requests_share_a_batch_and_get_their_own_answers():
    calls: list[int] = []
    gate = threading.Event()

    def fn(batch):
        gate.wait(5)  # the first batch holds the worker while the others queue
        calls.append(len(batch))
        return [x * 2 for x in batch]

    b = MicroBatcher(fn, BatchConfig(window_ms=1.0, max_batch=16))
    futures = [b.submit(i) for i in range(40)]
    gate.set()
    assert [f.result(5) for f in futures] == [i * 2 for i in range(40)]
    assert sum(calls) == 40 and max(calls) == 16 and len(calls) < 40  # batched, bounded by max_batch
    assert b.batches == len(calls) and b.items == 40


def test_a_failing_item_fails_alone():
    def fn(batch):
        if any(x < 0 for x in batch):
            raise ValueError("negative")
        return [x + 1 for x in batch]

    b = MicroBatcher(fn, BatchConfig(window_ms=5.0))
    futures = [b.submit(x) for x in (1, -1, 2)]
    assert futures[0].result(5) == 2 and futures[2].result(5) == 3
    with pytest.raises(ValueError):
        futures[1].result(5)


def test_a_lone_request_waits_at_most_the_window():
    b = MicroBatcher(lambda batch: batch, BatchConfig(window_ms=3.0))
    b.submit(0).result(5)  # thread started
    t = time.perf_counter()
    assert b.submit(7).result(5) == 7
    assert time.perf_counter() - t < 0.5  # 3 ms window plus scheduling on a busy machine


def test_awaitable_from_any_event_loop():
    b = MicroBatcher(lambda batch: [x + 1 for x in batch])

    async def many():
        return await asyncio.gather(*(b(i) for i in range(10)))

    assert asyncio.run(many()) == list(range(1, 11))
    assert asyncio.run(many()) == list(range(1, 11))  # a second loop: the worker is not tied to one


def test_batched_suggestions_equal_one_by_one(tiny_runs):
    from keyboard_fl.loading import load_suggester

    s, _ = load_suggester(tiny_runs["dp-fedavg"])
    texts = TEXTS + ["zz " + "q" * 30]  # a partial word past max_prefix: no search, no words
    one_by_one = [s.suggest(t, 3) for t in texts]
    assert one_by_one[-1] == [] and sum(map(bool, one_by_one)) >= 10
    assert s.suggest_many(texts, 3) == one_by_one  # 13 rows: padded to a batch of 16, one compiled shape


def test_a_cancelled_request_is_skipped_and_the_others_answered():
    gate = threading.Event()
    seen: list[list[int]] = []

    def fn(batch):
        gate.wait(5)
        seen.append(list(batch))
        return [x + 1 for x in batch]

    b = MicroBatcher(fn, BatchConfig(window_ms=1.0))

    async def main():
        first = asyncio.ensure_future(b(0))  # holds the worker at the gate
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(b(1))
        kept = [asyncio.ensure_future(b(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        gone.cancel()  # the client hung up while its request queued
        gate.set()
        return await first, await asyncio.gather(*kept), gone.cancelled()

    assert asyncio.run(main()) == (1, [3, 4], True)
    assert [x for batch in seen for x in batch] == [0, 2, 3]  # the cancelled item never reached the model
