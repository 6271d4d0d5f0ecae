"""The micro-batcher: concurrent requests share model runs, each gets its own result, errors stay apart."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from embedtune.serve.batcher import MicroBatcher


class Recorder:
    def __init__(self, delay: float = 0.0):
        self.batches: list[tuple[object, list]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, key, items):
        time.sleep(self.delay)
        with self.lock:
            self.batches.append((key, list(items)))
        if key == "boom":
            raise ValueError("bad batch")
        return [(key, item) for item in items]


def test_concurrent_requests_are_batched_and_answered_in_order():
    run = Recorder(delay=0.02)  # a slow model: requests queue meanwhile
    batcher = MicroBatcher(run, max_batch=16, wait_ms=5)
    batcher.start()
    futures = [batcher.submit("a" if i % 2 else "b", i) for i in range(40)]
    results = [f.result(10) for f in futures]
    batcher.stop()
    assert results == [("a" if i % 2 else "b", i) for i in range(40)]
    assert max(len(items) for _, items in run.batches) > 1  # shared model runs
    assert all(len(items) <= 16 for _, items in run.batches)
    assert all(len({k}) == 1 for k, _ in run.batches)  # each run holds one key


def test_size_counts_texts_and_a_big_request_runs_alone():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=4, wait_ms=50)
    futures = [batcher.submit("k", "three", size=3), batcher.submit("k", "two", size=2)]
    batcher.start()
    assert [f.result(10) for f in futures] == [("k", "three"), ("k", "two")]
    batcher.stop()
    assert [items for _, items in run.batches] == [["three"], ["two"]]


def test_an_error_fails_only_its_own_key():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, wait_ms=20)
    good, bad = batcher.submit("ok", 1), batcher.submit("boom", 2)
    batcher.start()
    assert good.result(10) == ("ok", 1)
    with pytest.raises(ValueError, match="bad batch"):
        bad.result(10)
    assert batcher.submit("ok", 3).result(10) == ("ok", 3)  # the worker goes on
    batcher.stop()


def test_cancelled_requests_are_skipped_and_stop_runs_what_is_queued():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, wait_ms=0)
    left, kept = batcher.submit("k", "left"), batcher.submit("k", "kept")
    left.cancel()
    batcher.start()
    batcher.stop()  # queued before stop: answered before the worker ends
    assert kept.result(0) == ("k", "kept")
    assert [items for _, items in run.batches] == [["kept"]]


def test_idle_request_does_not_wait_for_a_window():
    batcher = MicroBatcher(Recorder(), max_batch=64, wait_ms=1)
    batcher.start()

    async def one() -> float:
        started = time.perf_counter()
        await batcher.run("k", 1)
        return time.perf_counter() - started

    took = min(asyncio.run(one()) for _ in range(5))
    batcher.stop()
    assert took < 0.05
