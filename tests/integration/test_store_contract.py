"""The store's contract, against a real redis-server, a Sentinel-managed primary and
a 3-primary Redis Cluster: every public Store method, and the one rule behind them
all, that every key it writes is under the key prefix.

Other modules reach Redis only through these methods (tests/unit/test_layers.py
keeps redis imports inside store.py); a new kind of data adds its method here."""
import ipaddress

import pytest
import redis
import redis.cluster

from mx6milter.config import parse_config
from mx6milter.entries import EntryError
from mx6milter.prefixes import ip_candidates, ip_field
from mx6milter.store import SCHEMA_VERSION, EmptyReplace, Store, StoreUnavailable, address_query

NOW = 1_800_000_000


@pytest.fixture(params=["single", "sentinel", "cluster"])
def backend(request):
    """The [redis] section of each deployment shape, on flushed servers."""
    if request.param == "single":
        return f"[redis]\nurl = {request.getfixturevalue('redis_url')}\n"
    return request.getfixturevalue(f"{request.param}_redis")


@pytest.fixture
def store(backend):
    section = parse_config(backend + "key_prefix = t:\n").redis
    built = Store.from_config(section)
    built.clock = lambda: NOW
    return built


@pytest.fixture
def raw(store):
    """A client of the same Redis, for looking behind the Store (the primary, or the Cluster)."""
    return store.client


def every_key(raw) -> list:
    """KEYS * of the one Redis, or of every Cluster primary (a Cluster client asks one)."""
    if isinstance(raw, redis.RedisCluster):
        return raw.keys("*", target_nodes=raw.PRIMARIES)
    return raw.keys("*")


def field_of(prefix: str) -> str:
    return ip_field(ipaddress.IPv6Network(prefix))


def test_writes_reads_and_removals_through_the_store(store, raw):
    assert store.ping()
    assert store.add("ip", "feed", [("", field_of("2001:db8:1::/48"), "0"),
                                    ("", field_of("2001:db8:2::/48"), str(NOW - 1))]) == 2
    assert store.add("domain", "local", [("", "example.com", "dkim 0")]) == 1
    assert store.add("ab", "local", [("user@example.org", "alice@example.com", "0")]) == 1
    assert store.sources("ip") == {"feed"}
    assert store.stats("ab") == {"local": (1, 1)}
    assert [h.field for h in store.entries("ip", "feed")] == sorted(
        [field_of("2001:db8:1::/48"), field_of("2001:db8:2::/48")])

    answers = store.lookup({
        "ip": [("", f) for f in ip_candidates(ipaddress.IPv6Address("2001:db8:2::1"))],
        "domain": [("", "example.com")],
        "ab": [("user@example.org", "alice@example.com")],
    })
    assert answers["ip"] == []                         # expired one second before NOW
    assert [h.value for h in answers["domain"]] == ["dkim 0"]
    assert [(h.key, h.field) for h in answers["ab"]] == [("user@example.org", "alice@example.com")]

    assert store.remove("domain", None, [("", "example.com")]) == 1
    assert store.remove_keys("ab", "local", ["user@example.org"]) == 1
    assert store.lookup({"domain": [("", "example.com")]})["domain"] == []
    assert all(key.removeprefix("{").startswith("t:") for key in every_key(raw))  # Cluster: {t:v1}


def test_remove_source_drops_its_hashes_and_its_name(store, raw):
    store.add("ab", "crm", [("a@example.org", "x@example.com", "0"), ("b@example.org", "y@example.com", "0")])
    store.add("ab", "local", [("a@example.org", "z@example.com", "0")])
    assert store.remove_source("ab", "crm") == (2, True)
    assert store.sources("ab") == {"local"} and set(store.stats("ab")) == {"local"}
    assert [h.source for h in store.lookup({"ab": [("a@example.org", "z@example.com")]})["ab"]] == ["local"]
    assert store.remove_source("ab", "crm") == (0, False)
    assert sorted(raw.keys("t:*ab:crm*")) == []
    with pytest.raises(EntryError):
        store.remove_source("ab", "bad:name")


def test_replace_is_all_or_nothing_and_refuses_to_empty(store):
    store.add("ip", "feed", [("", field_of("2001:db8:1::/48"), "0")])
    assert store.replace_source("ip", "feed", [("", field_of("2001:db8:9::/48"), "0")]) == 1
    assert [h.field for h in store.entries("ip")] == [field_of("2001:db8:9::/48")]
    with pytest.raises(EmptyReplace):
        store.load("ip", "feed", [], replace=True, allow_empty=False)
    assert [h.field for h in store.entries("ip")] == [field_of("2001:db8:9::/48")]


def test_history_schema_memory_and_source_names(store, raw):
    assert store.record_history("history", "ipv4", "example.com", 20000, NOW + 100, 3600) == 1
    assert store.record_history("history", "ipv4", "example.com", 20003, NOW + 100, 3600) == 2
    assert store.read_value("history", "ipv4", "example.com", "v") == f"2 20000 20003 {NOW + 100}"
    assert 0 < raw.ttl(store.key("history", "ipv4", "example.com")) <= 3600
    assert store.read_schema() is None                      # reading writes nothing
    assert store.check_schema() == SCHEMA_VERSION and raw.get("t:schema") == str(SCHEMA_VERSION)
    assert store.read_schema() == SCHEMA_VERSION
    assert store.used_memory() > 0
    for bad in ("sources", "a:b", "a~b", ""):
        with pytest.raises(EntryError):
            store.add("ip", bad, [("", field_of("2001:db8:1::/48"), "0")])


def test_learnt_addressbooks_cap_ttl_and_script_reload(store, raw):
    books = {"u@example.org": ["a@example.net", "b@example.net"]}
    assert store.learn_addressbooks("learned", books, NOW + 10, 3600, 3) == 0
    raw.script_flush()                                     # as after a Redis restart
    assert store.learn_addressbooks("learned", {"u@example.org": ["c@example.net"]},
                                    NOW + 20, 3600, 3) == 0
    assert store.learn_addressbooks("learned", {"u@example.org": ["a@example.net", "d@example.net"]},
                                    NOW + 30, 3600, 3) == 1   # b, the oldest, evicted
    assert raw.hgetall(store.key("ab", "learned", "u@example.org")) == {
        "a@example.net": str(NOW + 30), "c@example.net": str(NOW + 20), "d@example.net": str(NOW + 30)}
    assert 0 < raw.ttl(store.key("ab", "learned", "u@example.org")) <= 3600
    assert store.sources("ab") == {"learned"}
    assert all(key.removeprefix("{").startswith("t:") for key in every_key(raw))  # Cluster: {t:v1}


def test_rdap_cache_and_the_registrar_lists_in_one_lookup(store, raw):
    store.cache_rdap("domain", "example.com", f"292 1000 public {NOW + 50}", 3600)
    store.cache_rdap("ip", "20010db8/32", f"yes {NOW + 50}", 3600)
    store.cache_rdap("domain", "old.example", f"7 1000 public {NOW - 1}", 3600)   # expired value
    store.add("registrar", "local", [("", "292", "0")])
    raw.hset(store.rdap_key("domain", "wrongtype.example"), "v", "1")                   # skipped, logged
    hits = store.lookup({"rdap": [("example.com", "domain"), ("old.example", "domain"),
                                  ("wrongtype.example", "domain"), ("", "20010db8/32"),
                                  ("", "20010db80001/48")]})["rdap"]
    assert sorted((h.source, h.key, h.field) for h in hits) == [
        ("domain", "example.com", "v"), ("ip", "", "20010db8/32"), ("local", "registrar", "292")]
    assert 0 < raw.ttl(store.rdap_key("ip", "20010db8/32")) <= 3600


def test_redis_down_is_store_unavailable_never_a_redis_error():
    config = parse_config("[redis]\nurl = redis://127.0.0.1:1/0\ntimeout = 0.2\n")
    down = Store.from_config(config.redis)
    assert not down.ping()
    for call in (lambda: down.lookup({"ip": [("", "20010db8/32")]}),
                 lambda: down.record_history("history", "ipv4", "example.com", 1, 0, 60),
                 lambda: down.read_value("history", "ipv4", "example.com", "v"),
                 lambda: down.learn_addressbooks("learned", {"u@x.example": ["a@y.example"]},
                                                 1, 60, 10),
                 lambda: down.cache_rdap("domain", "example.com", "- - notfound 1", 60),
                 down.check_schema, down.read_schema):
        with pytest.raises(StoreUnavailable):
            call()


# --- IP-keyed kinds: the prefixes of an address computed in Redis, for the lengths in use ---

ADDRESS = ipaddress.IPv6Address("2001:db8:abcd:1234:5678:9abc:def0:1234")
LENGTHS = (0, 1, 3, 15, 16, 17, 31, 47, 48, 50, 63, 64, 65, 99, 126, 127, 128)


def prefixes_of(address, lengths) -> list:
    return [ip_field(ipaddress.IPv6Network((int(address), n), strict=False)) for n in lengths]


def reset_stats(raw) -> None:
    if isinstance(raw, redis.cluster.RedisCluster):
        raw.config_resetstat(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    else:
        raw.config_resetstat()


def hgets(raw) -> int:
    """HGET calls run server-side; on a Cluster summed over every primary (the keys'
    slot may be on any of them, and a bare INFO asks one node)."""
    if isinstance(raw, redis.cluster.RedisCluster):
        per_node = raw.info("commandstats", target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        return sum(int(info.get("cmdstat_hget", {}).get("calls", 0)) for info in per_node.values())
    return int(raw.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))


@pytest.mark.parametrize("kind", ["ip", "green", "asn", "mishandle4xx"])
def test_address_query_finds_what_every_candidate_finds(store, kind):
    other = ipaddress.IPv6Address("2001:db8:abcd:1234:5678:9abc:def0:1235")   # differs at /128
    far = ipaddress.IPv6Address("3fff::1")
    entries = [("", f, "0") for f in prefixes_of(ADDRESS, LENGTHS)]
    entries += [("", f, "0") for f in prefixes_of(far, (20, 56, 128))]
    store.add(kind, "feed", entries)
    for address in (ADDRESS, other, far, ipaddress.IPv6Address("::")):
        fields = [("", f) for f in ip_candidates(address)]
        expected = [h.field for h in store.lookup({kind: fields})[kind]]
        got = [h.field for h in store.lookup({kind: [address_query(address)]})[kind]]
        assert got == expected                     # the same hits, longest first
    assert len(store.lookup({kind: [address_query(ADDRESS)]})[kind]) == len(LENGTHS)


def test_address_query_probes_only_the_lengths_in_use(store, raw):
    store.add("ip", "a", [("", field_of("2001:db8::/32"), "0"),
                          ("", field_of("2001:db9::/48"), "0")])
    store.add("ip", "b", [("", field_of("2001:db8:abcd::/48"), "0")])
    assert raw.smembers(store.kind_key("ip") + ":#lengths") == {"tracked", "32", "48"}
    reset_stats(raw)
    hits = store.lookup({"ip": [address_query(ADDRESS)]})["ip"]
    assert sorted((h.source, h.field) for h in hits) == [("a", "20010db8/32"), ("b", "20010db8abcd/48")]
    assert hgets(raw) == 4                         # 2 sources x 2 lengths, not 2 x 129
    # With other pairs in the same kind (mishandle4xx: prefixes and PTR domains).
    store.add("mishandle4xx", "local", [("", "mail.example.com", "0"),
                                        ("", field_of("2001:db8:abcd::/48"), "0")])
    hits = store.lookup({"mishandle4xx": [address_query(ADDRESS), ("", "mail.example.com")]})
    assert [h.field for h in hits["mishandle4xx"]] == ["20010db8abcd/48", "mail.example.com"]


def test_a_replace_and_a_staged_load_track_their_lengths(store, raw):
    store.add("green", "feed", [("", field_of("2001:db8::/32"), "0")])
    store.replace_source("green", "feed", [("", field_of("2001:db8:abcd:1234::/64"), "0")])
    hits = store.lookup({"green": [address_query(ADDRESS)]})["green"]
    assert [h.field for h in hits] == ["20010db8abcd1234/64"]
    assert {"tracked", "64"} <= raw.smembers(store.kind_key("green") + ":#lengths")


def test_entries_written_before_the_lengths_were_tracked_are_found(store, raw):
    """A Redis filled by an older version: no "#lengths" set. Lookups try every length;
    the first write reads the kind's fields once and tracks them from then on."""
    raw.sadd(store.kind_key("ip") + ":sources", "old")
    raw.hset(store.kind_key("ip") + ":old",
             mapping={field_of("2001:db8:abcd::/48"): "0", field_of("2001:db8::/29"): "0"})
    reset_stats(raw)
    assert len(store.lookup({"ip": [address_query(ADDRESS)]})["ip"]) == 2
    assert hgets(raw) == 129
    store.add("ip", "new", [("", field_of("2001:db8:abcd:1234::/64"), "0")])
    assert raw.smembers(store.kind_key("ip") + ":#lengths") == {"tracked", "29", "48", "64"}
    reset_stats(raw)
    hits = store.lookup({"ip": [address_query(ADDRESS)]})["ip"]
    assert sorted((h.source, h.field) for h in hits) == [
        ("new", "20010db8abcd1234/64"), ("old", "20010db8/29"), ("old", "20010db8abcd/48")]
    assert hgets(raw) == 6                         # 2 sources x 3 lengths


def test_a_hostile_lengths_set_costs_no_more_than_every_length(store, raw):
    store.add("ip", "feed", [("", field_of("2001:db8:abcd::/48"), "0")])
    raw.sadd(store.kind_key("ip") + ":#lengths", "-1", "129", "4.5", "x", "1e3", "0x10")
    assert [h.field for h in store.lookup({"ip": [address_query(ADDRESS)]})["ip"]] == ["20010db8abcd/48"]
    raw.delete(store.kind_key("ip") + ":#lengths")
    raw.set(store.kind_key("ip") + ":#lengths", "not a set")   # wrong type: every length
    assert [h.field for h in store.lookup({"ip": [address_query(ADDRESS)]})["ip"]] == ["20010db8abcd/48"]
