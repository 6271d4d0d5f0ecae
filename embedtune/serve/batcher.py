"""Micro-batching: requests from many connections run through the model together, on one thread.

The model runs on one worker thread, never on the event loop (which keeps accepting and answering
while a batch runs) and never on several threads at once (two batches in parallel on one CPU only
compete for its cores). A request is queued with a *key* (what it asks: which index, which
operation, which search options); the worker takes the first queued request, then whatever else is
queued, waiting at most ``wait_ms`` for more, up to ``max_batch`` texts, and runs each key's
requests as one call.

Failures designed out:

* **Slow idle requests.** There is no fixed batching delay: when nothing else is queued a request
  waits at most ``wait_ms`` (default about a millisecond). Under load, requests queue while a batch
  runs and make the next batch by themselves.
* **One bad request failing its batch-mates.** Requests are checked before they are queued; and a
  run that raises fails only its own key's requests, with the error the caller sees.
* **Work for clients that left.** A request whose caller was cancelled (a closed connection) is
  dropped before it runs.
* **Lost requests at shutdown.** :meth:`MicroBatcher.stop` runs everything already queued before
  the worker ends.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

_STOP = object()


@dataclass
class _Job:
    key: Hashable
    item: Any
    size: int  # texts in the request: what max_batch counts
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs ``run(key, items) -> results`` (one result per item, in order) for batches of queued requests.

    ``on_batch(texts, seconds_queued)`` is told of each batch run (for metrics).
    """

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        *,
        max_batch: int,
        wait_ms: float,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ):
        self._run, self.max_batch, self.wait = run, max_batch, wait_ms / 1000
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._carry: _Job | None = None  # taken from the queue but over the batch limit: first of the next

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="embedtune-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Run what is queued, then end the worker."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, key: Hashable, item: Any, size: int = 1) -> Future:
        job = _Job(key, item, size)
        self._queue.put(job)
        return job.future

    async def run(self, key: Hashable, item: Any, size: int = 1) -> Any:
        """Queue one request and wait for its result (its error is raised here)."""
        return await asyncio.wrap_future(self.submit(key, item, size))

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._carry or self._queue.get()
            self._carry = None
            if first is _STOP:
                return
            jobs, stopping = self._collect(first)
            self._run_batch(jobs)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job and those queued after it, within the size limit and the wait window."""
        jobs, size = [first], first.size
        deadline = time.perf_counter() + self.wait
        while size < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._drain(jobs)  # stopping: everything still queued runs now, then the worker ends
                return jobs, True
            if size + job.size > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            size += job.size
        return jobs, False

    def _drain(self, jobs: list[_Job]) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                jobs.append(job)

    def _run_batch(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # callers that left: skipped
        if not live:
            return
        if self._on_batch is not None:
            now = time.perf_counter()
            self._on_batch(sum(job.size for job in live), [now - job.queued for job in live])
        groups: dict[Hashable, list[_Job]] = {}
        for job in live:
            groups.setdefault(job.key, []).append(job)
        for key, group in groups.items():
            try:
                results = self._run(key, [job.item for job in group])
            except Exception as e:  # handed to the callers, whose requests it fails; the worker goes on
                for job in group:
                    job.future.set_exception(e)
                continue
            for job, result in zip(group, results, strict=True):
                job.future.set_result(result)
