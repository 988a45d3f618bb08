"""The DNS cache's byte bound ([dns] cache_bytes): estimated sizes, LRU eviction."""
import time

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from mx6milter.config import parse_config
from mx6milter.dns import ENTRY_OVERHEAD, RDATA_OVERHEAD, Resolver, _Cache, entry_bytes


def txt(size: int):
    strings = " ".join('"' + "a" * 250 + '"' for _ in range(size // 250))
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, strings or '""')


def test_entry_size_counts_txt_strings():
    record = txt(64_000)
    assert entry_bytes(("big.example", "TXT"), (record,)) == \
        ENTRY_OVERHEAD + len("big.example") + RDATA_OVERHEAD + 64_000
    a = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, "192.0.2.1")
    assert entry_bytes(("a.example", "A"), (a, a)) == ENTRY_OVERHEAD + 9 + 2 * RDATA_OVERHEAD
    assert entry_bytes(("x", "A"), "timed out") == ENTRY_OVERHEAD + 1 + 9


def test_bytes_bound_evicts_least_recently_used():
    cache = _Cache(size=1000, max_bytes=200_000)
    big = (txt(64_000),)
    for name in ("one", "two", "three"):
        cache.put((name, "TXT"), 60, big)
    assert cache.bytes <= 200_000
    assert cache.get(("one", "TXT")) is not None        # now the most recently used
    cache.put(("four", "TXT"), 60, big)                  # pushes out "two", the oldest
    assert cache.get(("two", "TXT")) is None
    assert all(cache.get((n, "TXT")) is not None for n in ("one", "three", "four"))
    assert cache.bytes == sum(entry_bytes((n, "TXT"), big) for n in ("one", "three", "four"))
    assert cache.bytes <= cache.max_bytes


def test_bytes_stay_exact_through_replace_and_expiry():
    cache = _Cache(size=10, max_bytes=1 << 20)
    cache.put(("a", "TXT"), 60, (txt(1000),))
    cache.put(("a", "TXT"), 60, (txt(5000),))            # replaced, not counted twice
    assert cache.bytes == entry_bytes(("a", "TXT"), (txt(5000),))
    cache.put(("b", "TXT"), 0.001, (txt(1000),))
    time.sleep(0.01)
    assert cache.get(("b", "TXT")) is None               # expired: its bytes given back
    assert cache.bytes == entry_bytes(("a", "TXT"), (txt(5000),))


def test_an_entry_larger_than_the_bound_is_not_cached():
    cache = _Cache(size=10, max_bytes=10_000)
    cache.put(("small", "TXT"), 60, (txt(1000),))
    cache.put(("huge", "TXT"), 60, (txt(20_000),))
    assert cache.get(("huge", "TXT")) is None
    assert cache.get(("small", "TXT")) is not None       # and nothing was pushed out for it


def test_entry_bound_still_holds():
    cache = _Cache(size=2, max_bytes=1 << 20)
    for name in ("a", "b", "c"):
        cache.put((name, "A"), 60, ())
    assert cache.get(("a", "A")) is None and len(cache._entries) == 2


def test_config_reaches_the_resolver():
    config = parse_config("[dns]\ncache_bytes = 2M\n")
    assert config.dns.cache_bytes == 2 << 20
    assert Resolver.from_config(config.dns)._cache.max_bytes == 2 << 20
    assert parse_config("").dns.cache_bytes == 16 << 20
