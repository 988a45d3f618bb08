"""The From domain's history over IPv4: a greenlist signal for IPv6 mail.

When ``[greenlist] history`` is on, the milter hands every IPv4 message to a
background ``HistoryRecorder``: it evaluates SPF, DKIM and DMARC and, when the
RFC5322.From domain authenticated (DMARC-aligned SPF or DKIM pass), records
the domain in Redis with a message count and the first and last day seen.
Over IPv6 the domain counts once it has ``history_min_messages`` messages
spread over at least ``history_min_days`` days, and only if the From domain
authenticated on the IPv6 message as well.

What it costs is kept small by counting a domain at most once a day once it has
reached ``history_min_messages`` (``HistoryRecorder.wants``): after that, on
that day, the milter reads only the From header of that domain's IPv4 mail and
accepts it at the end of the headers, as with the history off (no body, no
DNS, no DKIM, no Redis). The first message of each day still counts, so the
span of days stays current; the count then grows by one a day. A message
without exactly one From address is never recorded, so it is skipped too.
(bench/bench_history_cost.py measures it; bench/RESULTS.rst has the figures.)

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

import logging
import threading
import time
from dataclasses import dataclass

from ..addresses import domain_of
from .auth import Dmarc, authenticate, single_from_address
from .background import BackgroundQueue
from ..membudget import JUDGING_COPIES, Reservation
from ..model import Finding, Message
from ..policy import parse_client_ip

log = logging.getLogger(__name__)

DAY = 86400
KIND = "history"
SOURCE = "ipv4"      # the only source: what this milter saw over IPv4
FIELD = "v"          # one field per domain: "COUNT FIRST_DAY LAST_DAY EXPIRES"
MAX_COUNTED = 100_000   # domains remembered as counted today (about 10 MB); then forgotten

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


class HistoryRecorder(BackgroundQueue):
    """Authenticates IPv4 messages and records their From domains, in the background.

    ``submit`` never blocks and never raises into the milter (background.py);
    the queue is bounded by the messages' bytes.
    """
    what = "IPv4 history"
    redis_warning = "{what}: Redis: {error} ({failed} messages not recorded so far)"

    def __init__(self, history: History, resolver, checker: Dmarc, budget_seconds: float,
                 max_bytes: int, idle_seconds: float = 10.0):
        super().__init__(max_bytes, idle_seconds=idle_seconds)
        self.history = history
        self.resolver = resolver
        self.checker = checker
        self.budget_seconds = budget_seconds
        self.recorded = 0         # messages whose From domain was recorded
        self.skipped = 0          # messages not read: their domain was counted enough today
        self._lock = threading.Lock()
        self._day = -1
        self._counted: set = set()   # domains at the threshold and counted today

    def wants(self, from_values) -> bool:
        """Whether an IPv4 message with these From header values is worth reading: it
        has one From address, whose domain is not yet counted enough today. Cheap."""
        address, problem = single_from_address(from_values)
        if problem:
            return False
        with self._lock:
            if self._day != self.history.today():
                return True
            wanted = domain_of(address) not in self._counted
        if not wanted:
            self.skipped += 1
        return wanted

    def _counted_today(self, domain: str, count: int) -> None:
        if count < self.history.section.history_min_messages:
            return
        with self._lock:
            today = self.history.today()
            if self._day != today or len(self._counted) >= MAX_COUNTED:
                self._day, self._counted = today, set()
            self._counted.add(domain)

    def submit(self, client_ip: str, helo: str, mail_from: str,  # type: ignore[override]
               message: Message, reservation: Reservation | None = None) -> bool:
        """Queue MESSAGE; True if queued, and then its RESERVATION (its bytes in the
        process's memory budget) is released here once it is handled. False: the
        caller still owns it."""
        return super().submit(((client_ip, helo, mail_from, message), reservation),
                              len(message.raw))

    def handle(self, items: list) -> None:
        try:
            for item, reservation in items:
                # Verifying DKIM holds copies of the message: room for them, or not read.
                if reservation is not None and \
                        not reservation.ensure(JUDGING_COPIES * len(item[3].raw)):
                    with self._cond:
                        self.dropped += 1
                    log.debug("IPv4 history: memory budget spent, message not recorded")
                elif self.learn(*item):
                    self.recorded += 1
        finally:        # Redis down (background.py counts it) or a bug: the bytes come back
            self.discard(items)

    def discard(self, items: list) -> None:
        for _, reservation in items:
            if reservation is not None:
                reservation.release()

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
        count = self.history.record(auth.dmarc.from_domain)   # Redis down: raises to background.py
        self._counted_today(auth.dmarc.from_domain, count)
        return auth.dmarc.from_domain
