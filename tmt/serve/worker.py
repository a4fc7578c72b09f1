"""One model worker thread with a bounded queue that decodes requests of one kind together.

    worker = BatchWorker(run, queue_size=64, max_batch=16, max_wait_s=0.01)
    worker.start()
    job = worker.submit(key, payload)        # raises QueueFull when 64 jobs are waiting
    result = job.future.result()
    worker.stop()

`run(key, payloads)` is called from the worker thread only, with up to `max_batch` payloads
that share `key`; it returns one result per payload (an exception instance marks a failed
one). The worker takes the oldest waiting job, then collects the other waiting jobs with the
same key, waiting up to `max_wait_s` for more while the batch is not full. Jobs of other keys
keep their place in the queue. A job whose future was cancelled (its request timed out) before
the worker took it is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class QueueFull(Exception):
    """The queue holds `queue_size` waiting jobs; the request should be retried later."""


@dataclass(eq=False)
class Job:
    """One request waiting for (or done with) the model."""

    key: Hashable
    """Jobs with equal keys may be decoded together."""
    payload: Any
    """What `run` receives for this job."""
    future: Future[Any] = field(default_factory=Future)
    """Resolves to `run`'s result for this payload (or its exception)."""
    enqueued: float = field(default_factory=time.perf_counter)
    """perf_counter() when submitted."""
    started: float | None = None
    """perf_counter() when its batch started decoding."""
    finished: float | None = None
    """perf_counter() when its batch finished."""
    batch_size: int = 0
    """Jobs decoded in its batch."""


@dataclass
class WorkerStats:
    """Counters since the worker started (read without a lock: they are informative only)."""

    jobs: int = 0
    """Jobs decoded (successfully or not)."""
    batches: int = 0
    """Calls of `run`."""
    largest_batch: int = 0
    """The biggest batch so far."""
    rejected: int = 0
    """Submissions refused because the queue was full."""
    cancelled: int = 0
    """Jobs dropped because their request had given up."""


class BatchWorker:
    """A bounded queue and the single thread that drains it in batches."""

    def __init__(self, run: RunBatch, *, queue_size: int, max_batch: int, max_wait_s: float,
                 name: str = "tmt-serve-model") -> None:
        if queue_size < 1 or max_batch < 1 or max_wait_s < 0:
            raise ValueError("queue_size and max_batch must be >= 1, max_wait_s >= 0")
        self._run = run
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = WorkerStats()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    # ---- client side ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, key: Hashable, payload: Any) -> Job:
        """Queue one job; raises QueueFull when `queue_size` jobs are already waiting."""
        job = Job(key=key, payload=payload)
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.queue_size:
                self.stats.rejected += 1
                raise QueueFull(f"{len(self._queue)} requests are waiting for the model (the queue holds {self.queue_size})")
            self._queue.append(job)
            self._cond.notify_all()
        return job

    @property
    def depth(self) -> int:
        """Jobs waiting (not counting the batch being decoded)."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Whether a batch is being decoded right now."""
        return self._busy

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, cancel the waiting ones, and wait for the running batch to end."""
        with self._cond:
            self._stopping = True
            waiting = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in waiting:
            job.future.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- worker side ------------------------------------------------------------------
    def _take_same_key(self, key: Hashable, batch: list[Job]) -> None:
        """Move waiting jobs with `key` into `batch` (oldest first) until it is full. Holds the lock."""
        if len(batch) >= self.max_batch:
            return
        keep: deque[Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.key == key and len(batch) < self.max_batch:
                batch.append(job)
            else:
                keep.append(job)
        self._queue = keep

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._queue.popleft()
            batch = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while True:
                self._take_same_key(first.key, batch)
                left = deadline - time.perf_counter()
                if len(batch) >= self.max_batch or left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            self._busy = True
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                live = [j for j in batch if j.future.set_running_or_notify_cancel()]
                self.stats.cancelled += len(batch) - len(live)
                if live:
                    self._decode(live)
            finally:
                self._busy = False

    def _decode(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        for job in batch:
            job.started, job.batch_size = start, len(batch)
        try:
            results: Sequence[Any] = self._run(batch[0].key, [j.payload for j in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} inputs")
        except Exception as e:  # never let one batch kill the worker
            log.exception("batch of %d failed", len(batch))
            results = [e] * len(batch)
        end = time.perf_counter()
        self.stats.jobs += len(batch)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for job, res in zip(batch, results, strict=True):
            job.finished = end
            if isinstance(res, BaseException):
                job.future.set_exception(res)
            else:
                job.future.set_result(res)
