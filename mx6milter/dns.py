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


class Resolver:
    def __init__(self, nameservers=(), timeout: float = 2.0, cache_size: int = 10000):
        self.timeout = timeout
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                          for host, port in nameservers]
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.cache = dns.resolver.LRUCache(cache_size)
        self._lock = threading.Lock()
        self.lookups = 0          # answered from the network, not the cache

    @classmethod
    def from_config(cls, dns_section) -> "Resolver":
        return cls(dns_section.nameservers, dns_section.timeout, dns_section.cache_size)

    def budget(self, seconds: float) -> "Budget":
        return Budget(self, time.monotonic() + seconds)

    def query(self, name: str, rdtype: str, deadline: float | None = None) -> list:
        """The rdatas of NAME/TYPE; [] for NXDOMAIN or no data. Raises DnsTempError."""
        lifetime = self.timeout
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0:
                raise DnsTempError(f"{name}/{rdtype}: DNS time budget spent")
        cache = self._resolver.cache
        misses_before = cache.statistics.misses if hasattr(cache, "statistics") else 0
        try:
            answer = self._resolver.resolve(name, rdtype, lifetime=lifetime,
                                            raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return []
        except dns.resolver.NoNameservers as err:
            raise DnsTempError(f"{name}/{rdtype}: no server answered (SERVFAIL or refused)") from err
        except dns.exception.Timeout as err:
            raise DnsTempError(f"{name}/{rdtype}: timed out") from err
        except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong,
                dns.exception.SyntaxError, UnicodeError, ValueError):
            return []   # not a name that can exist
        except dns.exception.DNSException as err:
            raise DnsTempError(f"{name}/{rdtype}: {err}") from err
        finally:
            if hasattr(cache, "statistics") and cache.statistics.misses != misses_before:
                with self._lock:
                    self.lookups += 1
        return list(answer.rrset) if answer.rrset is not None else []


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
