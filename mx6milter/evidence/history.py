"""The From domain's history over IPv4: a greenlist signal for IPv6 mail.

When ``[greenlist] history`` is on, the milter hands every IPv4 message to a
background ``HistoryRecorder``: it evaluates SPF, DKIM and DMARC and, when the
RFC5322.From domain authenticated (DMARC-aligned SPF or DKIM pass), records
the domain in Redis with a message count and the first and last day seen.
Over IPv6 the domain counts once it has ``history_min_messages`` messages
spread over at least ``history_min_days`` days, and only if the From domain
authenticated on the IPv6 message as well.

The IPv4 verdict never depends on any of this: recording happens after the
IPv4 message was accepted, off the milter's thread, and every failure is
logged and forgotten. Memory is bounded twice: each domain's key expires
``history_expiry_days`` after its last IPv4 message, and the queue of
messages waiting to be recorded holds at most ``history_queue_size`` bytes
(messages beyond it are not recorded, and counted as dropped); each queued
message also holds its bytes in the process's memory budget ([milter]
max_buffered_bytes) until it is recorded, and is dropped as well if the
budget has no room for verifying it.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from .auth import Dmarc, authenticate
from ..membudget import JUDGING_COPIES, Reservation
from ..model import Finding, Message
from ..policy import parse_client_ip
from ..store import StoreUnavailable

log = logging.getLogger(__name__)

DAY = 86400
KIND = "history"
SOURCE = "ipv4"      # the only source: what this milter saw over IPv4
FIELD = "v"          # one field per domain: "COUNT FIRST_DAY LAST_DAY EXPIRES"

@dataclass(frozen=True)
class Entry:
    count: int
    first_day: int
    last_day: int
    expires: int

    @property
    def span_days(self) -> int:
        return self.last_day - self.first_day

    @classmethod
    def parse(cls, value: str) -> Entry:
        count, first, last, expires = (int(part) for part in value.split())
        return cls(count, first, last, expires)


class History:
    """The history's Redis schema: one small hash per domain, with a TTL."""

    def __init__(self, store, section, clock=time.time):
        self.store = store
        self.section = section
        self.clock = clock

    def today(self) -> int:
        return int(self.clock() // DAY)

    def record(self, domain: str) -> int:
        """Count one authenticated IPv4 message of DOMAIN; returns its new count."""
        ttl = self.section.history_expiry_days * DAY
        expires = int(self.clock()) + ttl
        return self.store.record_history(KIND, SOURCE, domain, self.today(), expires, ttl)

    def read(self, domain: str) -> Entry | None:
        value = self.store.read_value(KIND, SOURCE, domain, FIELD)
        return Entry.parse(value) if value else None

    @staticmethod
    def query(domain: str) -> list:
        """The (key suffix, field) pairs for Store.lookup."""
        return [(domain, FIELD)]

    def judge(self, hits: list, domain: str, via: str) -> Finding:
        """The history signal for an IPv6 message whose From domain is DOMAIN."""
        hit = next((h for h in hits if h.source == SOURCE and h.key == domain), None)
        if hit is None:
            return Finding("history", "miss", domain)
        try:
            entry = Entry.parse(hit.value)
        except ValueError:
            log.warning("history of %s: unreadable value %r", domain, hit.value)
            return Finding("history", "miss", f"{domain} unreadable")
        detail = f"{domain} messages={entry.count} days={entry.span_days}"
        need_messages = self.section.history_min_messages
        need_days = self.section.history_min_days
        if entry.count < need_messages or entry.span_days < need_days:
            return Finding("history", "below-threshold",
                           f"{detail} needs messages={need_messages} days={need_days}")
        if not via:
            return Finding("history", "unauthenticated", f"{detail}; From not authenticated now")
        return Finding("history", "pass", f"{detail} via={via}")


class HistoryRecorder:
    """Authenticates IPv4 messages and records their From domains, in the background.

    One worker thread, started on demand and gone after ``idle_seconds``
    without work (so a reload, which builds a new recorder, leaks nothing).
    ``submit`` never blocks and never raises into the milter.
    """

    def __init__(self, history: History, resolver, checker: Dmarc, budget_seconds: float,
                 max_bytes: int, idle_seconds: float = 10.0):
        self.history = history
        self.resolver = resolver
        self.checker = checker
        self.budget_seconds = budget_seconds
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._bytes = 0
        self._busy = False
        self._worker = None
        self._last_drop_log = 0.0
        self.recorded = 0         # messages whose From domain was recorded
        self.dropped = 0          # messages not recorded because the queue was full
        self.failed = 0           # messages whose recording raised

    def submit(self, client_ip: str, helo: str, mail_from: str, message: Message,
               reservation: Reservation | None = None) -> bool:
        """Queue MESSAGE; True if queued, and then its RESERVATION is released here once
        the message is recorded or dropped. False: the caller still owns it."""
        size = len(message.raw)
        with self._cond:
            if self._bytes + size > self.max_bytes:
                self.dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log > 60:
                    self._last_drop_log = now
                    log.warning("IPv4 history: queue full (%d bytes), %d messages not recorded "
                                "so far", self._bytes, self.dropped)
                return False
            self._queue.append(((client_ip, helo, mail_from, message), reservation))
            self._bytes += size
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="mx6-history", daemon=True)
                self._worker.start()
            self._cond.notify()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is recorded (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue, self.idle_seconds):
                    self._worker = None
                    return
                item, reservation = self._queue.popleft()
                self._busy = True
            try:
                self._record(item, reservation)
            finally:
                if reservation is not None:
                    reservation.release()
                with self._cond:
                    self._bytes -= len(item[3].raw)
                    self._busy = False
                    self._cond.notify_all()
            del item, reservation     # not kept while the worker waits for the next one

    def _record(self, item: tuple, reservation: Reservation | None) -> None:
        # Verifying DKIM holds copies of the message: room for them, or not learnt.
        if reservation is not None and not reservation.ensure(JUDGING_COPIES * len(item[3].raw)):
            with self._cond:
                self.dropped += 1
            log.debug("IPv4 history: memory budget spent, message not recorded")
            return
        try:
            if self.learn(*item):
                self.recorded += 1
        except Exception:   # a bug or Redis down: the IPv4 mail is long accepted
            self.failed += 1
            log.exception("IPv4 history: recording failed (message not recorded)")

    def learn(self, client_ip: str, helo: str, mail_from: str, message: Message) -> str:
        """Authenticate one IPv4 message; record and return its From domain if aligned."""
        address = parse_client_ip(client_ip)
        if address is None:
            return ""
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        budget = self.resolver.budget(self.budget_seconds)
        from_values = [value for name, value in message.headers if name.lower() == "from"]
        auth = authenticate(budget, self.checker, str(address), helo, mail_from, from_values,
                            message.raw, message.truncated)
        if not auth.aligned_via:
            log.debug("IPv4 history: From domain %r not authenticated (spf=%s dmarc=%s)",
                      auth.dmarc.from_domain, auth.spf.result, auth.dmarc.result)
            return ""
        try:
            self.history.record(auth.dmarc.from_domain)
        except StoreUnavailable as err:
            self.failed += 1
            log.warning("IPv4 history: Redis: %s (message not recorded)", err)
            return ""
        return auth.dmarc.from_domain
