"""One DNS resolver for everything: configured servers, timeouts, a TTL cache.

Answers, NXDOMAIN and NODATA are all cached for their TTL by dnspython's
LRU cache. A per-message ``Budget`` bounds the total time one message may
spend waiting for DNS; once spent, lookups fail as temporary errors.
"""
from __future__ import annotations

import threading
import time

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver


class DnsTempError(Exception):
    """A lookup that could not be answered now (timeout, SERVFAIL, budget spent)."""


class _CountingNameserver(dns.nameserver.Do53Nameserver):
    """A plain UDP/TCP nameserver that counts the queries really sent to it."""

    def __init__(self, address: str, port: int, owner: "Resolver"):
        super().__init__(address, port)
        self.owner = owner

    def query(self, *args, **kwargs):
        self.owner._count_lookup()
        return super().query(*args, **kwargs)


class Resolver:
    def __init__(self, nameservers=(), timeout: float = 2.0, cache_size: int = 10000):
        self.timeout = timeout
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
        self._resolver.cache = dns.resolver.LRUCache(cache_size)

    def _count_lookup(self) -> None:
        with self._lock:
            self.lookups += 1

    @classmethod
    def from_config(cls, dns_section) -> "Resolver":
        return cls(dns_section.nameservers, dns_section.timeout, dns_section.cache_size)

    def budget(self, seconds: float) -> "Budget":
        return Budget(self, time.monotonic() + seconds)

    def query(self, name: str, rdtype: str, deadline: float | None = None) -> list:
        """The rdatas of NAME/TYPE; [] for NXDOMAIN or no data. Raises DnsTempError."""
        qname = _query_name(name)
        if qname is None:
            return []       # not a name that can exist
        lifetime = self.timeout
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0:
                raise DnsTempError(f"{name}/{rdtype}: DNS time budget spent")
        try:
            answer = self._resolver.resolve(qname, rdtype, lifetime=lifetime,
                                            raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return []
        except dns.resolver.NoNameservers as err:
            raise DnsTempError(f"{name}/{rdtype}: no server answered (SERVFAIL, refused "
                               "or unreachable)") from err
        except dns.exception.Timeout as err:
            raise DnsTempError(f"{name}/{rdtype}: timed out") from err
        except dns.exception.DNSException as err:
            raise DnsTempError(f"{name}/{rdtype}: {err}") from err
        return list(answer.rrset) if answer.rrset is not None else []


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
