"""Work taken off the milter's thread: a bounded queue and one worker thread.

The evidence that builds itself (the IPv4 history, addressbooks learnt from
outbound mail, RDAP lookups) is written or fetched here, never while an SMTP
client waits. ``submit`` never blocks and never raises: when the queue holds
``max_cost`` already, the item is dropped and counted. The worker thread is
started on demand and ends after ``idle_seconds`` without work, so a reload,
which builds new queues, leaks nothing. A subclass says what one batch of
items means in ``handle``; an exception there is logged and counted, never
seen by the milter.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

log = logging.getLogger(__name__)


class BackgroundQueue:
    what = "background work"      # for the log lines

    def __init__(self, max_cost: int, batch_size: int = 1, idle_seconds: float = 10.0):
        self.max_cost = max_cost
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._cost = 0
        self._busy = False
        self._worker: threading.Thread | None = None
        self._last_drop_log = 0.0
        self.dropped = 0          # items not queued because the queue was full
        self.failed = 0           # items whose handling raised (or that a subclass counts)

    def submit(self, item, cost: int = 1) -> bool:
        with self._cond:
            if self._cost + cost > self.max_cost:
                self.dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log > 60:
                    self._last_drop_log = now
                    log.warning("%s: queue full, %d items dropped so far", self.what, self.dropped)
                return False
            self._queue.append((item, cost))
            self._cost += cost
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=f"mx6-{self.what}",
                                                daemon=True)
                self._worker.start()
            self._cond.notify()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is handled (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def handle(self, items: list) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue, self.idle_seconds):
                    self._worker = None
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(self.batch_size, len(self._queue)))]
                self._busy = True
            try:
                self.handle([item for item, _ in batch])
            except Exception:   # a bug or Redis down: the mail is long answered
                self.failed += len(batch)
                log.exception("%s: %d items failed", self.what, len(batch))
            finally:
                with self._cond:
                    self._cost -= sum(cost for _, cost in batch)
                    self._busy = False
                    self._cond.notify_all()
