"""One DNS resolver for everything: configured servers, timeouts, a TTL cache.

Answers, NXDOMAIN and NODATA are cached for their TTL (the SOA's negative TTL
for the last two), temporary failures for ``FAILURE_TTL`` seconds, in one LRU
cache of our own in front of dnspython, bounded by entries and by estimated
bytes: a repeat costs a dict lookup instead of dnspython's resolve() (about 30
times as much CPU). A per-message ``Budget``
bounds the total time one message may spend waiting for DNS; once spent,
lookups the cache cannot answer fail as temporary errors.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

if TYPE_CHECKING:
    from .metrics import Metrics

# A temporary failure (SERVFAIL, REFUSED, no server reachable, a full timeout) of
# a name and type is remembered this long, for every type of lookup, not only the
# greenlist's PTR. It still raises DnsTempError: a failure never becomes "no
# record", only temperror, and temperror only sends the message to IPv4 (or to
# the report), so no mail is lost. The cost of a failure asked again on every
# message is worst for a timeout: each message from that client or sender holds
# an MTA session and a milter thread for up to [dns] timeout, and a hostile
# sender can arrange that for its own domain or reverse zone. Remembered, it
# costs one wait per 30 s. The price: a blip in a whitelisted sender's SPF, DKIM
# key or DMARC record sends its IPv6 mail to IPv4 for up to 30 s. RFC 9520 asks
# resolvers to cache resolution failures (at least 1 s, at most 5 min) for the
# same reasons. A timeout cut short by the message's budget says nothing about
# the name and is not remembered.
FAILURE_TTL = 30.0

_NXDOMAIN = object()   # the type slot of a cache entry for a whole name


class DnsTempError(Exception):
    """A lookup that could not be answered now (timeout, SERVFAIL, budget spent)."""


# The estimated bytes of one cache entry beyond its records' data (the key, the
# tuple, the dict slot, dnspython's objects), and of each record beyond its data.
ENTRY_OVERHEAD = 200
RDATA_OVERHEAD = 100


def entry_bytes(key, value) -> int:
    """An estimate of what a cache entry holds: a TXT answer (up to 64 KB in one
    message) counts its strings, other records a fixed amount, a failure its text, a
    result derived from answers (``Resolver.remember``) its text form."""
    size = ENTRY_OVERHEAD + len(str(key[0]))
    if isinstance(value, str):
        return size + len(value)
    if not isinstance(value, tuple):
        return size + len(str(value))
    for rdata in value:
        strings = getattr(rdata, "strings", None)
        size += RDATA_OVERHEAD + (sum(len(s) for s in strings) if strings else 0)
    return size


class _Cache:
    """(name, type) -> rdatas or a failure's text, until a monotonic expiry.

    LRU-bounded by entries and by estimated bytes (``entry_bytes``), and locked:
    libmilter runs callbacks in many threads."""

    def __init__(self, size: int, max_bytes: int = 16 << 20):
        self.size = max(1, size)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict = OrderedDict()   # key -> (expiry, value, bytes)
        self._lock = threading.Lock()

    def get(self, key):
        """The value (a tuple of rdatas, or a str for a failure), or None."""
        entry = self.entry(key)
        return None if entry is None else entry[1]

    def entry(self, key):
        """(monotonic expiry, value), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                self.bytes -= entry[2]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key, ttl: float, value) -> None:
        if ttl <= 0:
            return
        size = entry_bytes(key, value)
        if size > self.max_bytes:
            return          # would push out everything else
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            self._entries[key] = (time.monotonic() + ttl, value, size)
            self.bytes += size
            while len(self._entries) > self.size or self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted[2]


class _CountingNameserver(dns.nameserver.Do53Nameserver):
    """A plain UDP/TCP nameserver that counts the queries really sent to it."""

    def __init__(self, address: str, port: int, owner: Resolver):
        super().__init__(address, port)
        self.owner = owner

    def query(self, *args, **kwargs):
        self.owner._count_lookup()
        return super().query(*args, **kwargs)


class Resolver:
    def __init__(self, nameservers=(), timeout: float = 2.0, cache_size: int = 10000,
                 failure_ttl: float = FAILURE_TTL, cache_bytes: int = 16 << 20,
                 metrics: Metrics | None = None):
        self.metrics = metrics   # the daemon's counters; None: not counted (tools, tests)
        self.timeout = timeout
        self.failure_ttl = failure_ttl
        self._cache = _Cache(cache_size, cache_bytes)
        self._lock = threading.Lock()
        self.lookups = 0          # queries sent to a server: the cache could not answer
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if not nameservers:       # the system's (/etc/resolv.conf), port included
            res = self._resolver
            nameservers = [(ns, res.nameserver_ports.get(ns, res.port))
                           for ns in res.nameservers if isinstance(ns, str)]
        self._resolver.nameservers = [_CountingNameserver(host, port, self)
                                      for host, port in nameservers]
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.cache = None     # ours (_Cache) instead: one bound, one LRU order

    def _count_lookup(self) -> None:
        with self._lock:
            self.lookups += 1
        if self.metrics is not None:
            self.metrics.dns_queries.inc()

    @classmethod
    def from_config(cls, dns_section, metrics: Metrics | None = None) -> Resolver:
        return cls(dns_section.nameservers, dns_section.timeout, dns_section.cache_size,
                   cache_bytes=dns_section.cache_bytes, metrics=metrics)

    def budget(self, seconds: float) -> Budget:
        return Budget(self, time.monotonic() + seconds)

    def query(self, name: str, rdtype: str, deadline: float | None = None) -> list:
        """The rdatas of NAME/TYPE; [] for NXDOMAIN or no data. Raises DnsTempError.

        A cached answer (or failure) is returned even once the budget is spent:
        it costs no waiting."""
        key = (_cache_name(name), rdtype)
        cached = self._cached(key)
        if cached is not None:
            if isinstance(cached, str):
                raise DnsTempError(cached)
            return list(cached)
        qname = _query_name(name)
        if qname is None:
            return []       # not a name that can exist
        lifetime = self.timeout
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0:
                raise self._failure(key, f"{name}/{rdtype}: DNS time budget spent",
                                    remember=False, timeout=True)
        try:
            answer = self._resolver.resolve(qname, rdtype, lifetime=lifetime,
                                            raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as err:
            self._remember_nxdomain(key, qname, err)
            return []
        except dns.resolver.YXDOMAIN:
            return []
        except dns.resolver.NoNameservers as err:
            raise self._failure(key, f"{name}/{rdtype}: no server answered (SERVFAIL, "
                                "refused or unreachable)") from err
        except dns.exception.Timeout as err:
            raise self._failure(key, f"{name}/{rdtype}: timed out",
                                remember=lifetime >= self.timeout, timeout=True) from err
        except dns.exception.DNSException as err:
            raise self._failure(key, f"{name}/{rdtype}: {err}") from err
        rdatas = tuple(answer.rrset) if answer.rrset is not None else ()
        # expiration (wall clock) honours the TTL, or the SOA's negative TTL for NODATA
        self._cache.put(key, answer.expiration - time.time(), rdatas)
        return list(rdatas)

    def expiry(self, name: str, rdtype: str) -> float:
        """When the cached answer for NAME/TYPE (or its name's NXDOMAIN) expires, as
        time.monotonic(); 0 when none is cached, or the cached one is a failure."""
        key = (_cache_name(name), rdtype)
        entry = self._cache.entry(key) or self._cache.entry((key[0], _NXDOMAIN))
        return 0.0 if entry is None or isinstance(entry[1], str) else entry[0]

    def remember(self, key: tuple, expiry: float, value) -> None:
        """Keep a result derived from DNS answers (KEY starts with its kind, e.g.
        "spf") in the same bounded cache, until EXPIRY (time.monotonic())."""
        self._cache.put(key, expiry - time.monotonic(), value)

    def recall(self, key: tuple):
        """What remember() kept under KEY, None once it expired or was evicted."""
        return self._cache.get(key)

    def _cached(self, key):
        """The cache's answer for KEY (or for its whole name's NXDOMAIN), counted; or None."""
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache.get((key[0], _NXDOMAIN))
        if cached is not None and self.metrics is not None:
            self.metrics.dns_cache_hits.inc()
        return cached

    def _remember_nxdomain(self, key, qname, err) -> None:
        # The negative TTL: min(SOA TTL, SOA minimum) from the authority section
        # (0 without an SOA: not cached), and the TTLs of any CNAMEs on the way.
        try:
            chain = err.response(qname).resolve_chaining()
        except Exception:       # a response dnspython accepted but cannot walk
            return
        # Through a CNAME the name itself exists: only this type is known empty.
        where = key if chain.cnames else (key[0], _NXDOMAIN)
        self._cache.put(where, chain.minimum_ttl, ())

    def _failure(self, key, text: str, remember: bool = True, timeout: bool = False) -> DnsTempError:
        if self.metrics is not None:
            self.metrics.dns_failures.inc()
            if timeout:
                self.metrics.dns_timeouts.inc()
        if remember:
            self._cache.put(key, self.failure_ttl,
                            f"{text} (failure remembered up to {self.failure_ttl:g} s)")
        return DnsTempError(text)


def reverse_nibbles(address) -> str:
    """An IPv6 address as RFC 3596/5782 write it in DNS: 32 hex nibbles, last first,
    dot-separated, no suffix ('2001:db8::1' -> '1.0.0...8.b.d.0.1.0.0.2'). By hand:
    dnspython's reversename cost more than the cached lookup it names."""
    return ".".join(reversed(f"{int(address):032x}"))


def _cache_name(name):
    """NAME as a cache key: "Example.COM." and "example.com" are one entry.

    lower() folds only ASCII safely (IDNA maps the rest its own way), so other
    names are keyed as given. An escaped final dot is part of the last label."""
    if not isinstance(name, str) or not name.isascii():
        return name
    name = name.lower()
    if name.endswith(".") and not name.endswith("\\."):
        name = name[:-1]
    return name


def _query_name(name: str):
    """NAME as an absolute dns.name.Name, or None for names from hostile input that
    no mail domain can have: empty, root, bad labels or IDNA, control bytes or spaces."""
    try:
        qname = dns.name.from_text(name)
    except Exception:   # empty or long labels, bad escapes, bad IDNA, ...
        return None
    labels = qname.labels[:-1] if qname.is_absolute() else qname.labels
    if not labels or not all(labels) or any(b < 0x21 or b > 0x7e for label in labels for b in label):
        return None
    return qname


class Budget:
    """The resolver seen by one message: the same cache, a shared deadline."""

    def __init__(self, resolver: Resolver, deadline: float):
        self.resolver = resolver
        self.deadline = deadline

    def query(self, name: str, rdtype: str) -> list:
        return self.resolver.query(name, rdtype, self.deadline)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def txt(self, name: str) -> list:
        """TXT records as bytes, each record's strings joined."""
        return [b"".join(rdata.strings) for rdata in self.query(name, "TXT")]
