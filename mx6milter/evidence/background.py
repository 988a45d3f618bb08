"""Work taken off the milter's thread: a bounded queue and one worker thread.

The evidence that builds itself (the IPv4 history, addressbooks learnt from
outbound mail, RDAP lookups) and the journal of decisions are written or
fetched here, never while an SMTP client waits. ``submit`` never blocks and
never raises: when the queue holds ``max_cost`` already, the item is dropped
and counted. The worker thread is started on demand and ends after
``idle_seconds`` without work, so a reload, which builds new queues, leaks
nothing. A subclass says what one batch of items means in ``handle``; an
exception there is logged and counted, never seen by the milter.

When ``handle`` raises StoreUnavailable, the batch is counted failed and the
batches of the next ``REDIS_PAUSE`` seconds are counted failed without being
handled, so a dead or hung Redis costs no timeout per item; the warning is
logged once a minute.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from ..store import StoreUnavailable

REDIS_PAUSE = 1.0      # seconds Redis is left alone after it failed
LOG_EVERY = 60.0       # seconds between two warnings of the same kind


class BackgroundQueue:
    # The log lines, str.format fields: what, dropped, failed, error, count (of a batch).
    what = "background work"      # also the thread's name
    full_warning = "{what}: queue full, {dropped} items dropped so far"
    redis_warning = "{what}: Redis: {error} ({failed} items failed so far)"
    bug_message = "{what}: {count} items failed"

    def __init__(self, max_cost: int, batch_size: int = 1, idle_seconds: float = 10.0):
        self.max_cost = max_cost
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._cost = 0
        self._busy = False
        self._worker: threading.Thread | None = None
        # never: time.monotonic() counts from boot, so 0.0 would hush the first minute's lines
        self._last_drop_log = self._last_fail_log = float("-inf")
        self._redis_down_until = 0.0
        self.dropped = 0          # items not queued because the queue was full
        self.failed = 0           # items whose handling raised (or that a subclass counts)
        self._log = logging.getLogger(type(self).__module__)   # the lines name the subclass's module
        self.monotonic = time.monotonic   # the clock of the pause and the log limits (tests move it)

    def submit(self, item, cost: int = 1) -> bool:
        with self._cond:
            if self._cost + cost > self.max_cost:
                self.dropped += 1
                now = self.monotonic()
                if now - self._last_drop_log > LOG_EVERY:
                    self._last_drop_log = now
                    self._log.warning("%s", self.full_warning.format(what=self.what,
                                                               dropped=self.dropped))
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

    def discard(self, items: list) -> None:
        """Items not handled because Redis failed a moment ago: free what they hold."""

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue, self.idle_seconds):
                    self._worker = None
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(self.batch_size, len(self._queue)))]
                self._busy = True
            items = [item for item, _ in batch]
            try:
                if self.monotonic() < self._redis_down_until:
                    self.failed += len(items)
                    self.discard(items)
                else:
                    self.handle(items)
            except StoreUnavailable as err:    # the mail was answered long ago
                self._redis_failed(err, len(items))
            except Exception:   # a bug: logged, and the thread goes on
                self.failed += len(items)
                self._log.exception("%s", self.bug_message.format(what=self.what, count=len(items)))
            finally:
                with self._cond:
                    self._cost -= sum(cost for _, cost in batch)
                    self._busy = False
                    self._cond.notify_all()

    def _redis_failed(self, err: StoreUnavailable, count: int) -> None:
        # From the failure, not the start: a timeout may itself last a second or more.
        self.failed += count
        now = self.monotonic()
        self._redis_down_until = now + REDIS_PAUSE
        if now - self._last_fail_log > LOG_EVERY:
            self._last_fail_log = now
            self._log.warning("%s", self.redis_warning.format(what=self.what, error=err,
                                                        failed=self.failed))
