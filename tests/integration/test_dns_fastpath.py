"""mx6milter.dns front cache against a real BIND on loopback: repeats answered without a
query until the TTL (or negative TTL) runs out, temporary failures remembered as failures,
bounded size, many threads."""
import socket
import threading
import time

import pytest

from mx6milter.dns import FAILURE_TTL, DnsTempError, Resolver

from dnsserver import DnsServer

# SOA TTL 60, minimum 1: NXDOMAIN and NODATA may be cached for 1 s.
ZONE = """$TTL 60
@        IN SOA ns.fast.test. host.fast.test. 1 60 60 60 1
@        IN NS  ns.fast.test.
ns       IN A   127.0.0.1
long     IN TXT "long"
short  1 IN TXT "short"
zero   0 IN TXT "zero"
mail     IN AAAA 2001:db8::25
alias    IN CNAME nowhere.fast.test.
"""


@pytest.fixture(scope="module")
def fast_dns(tmp_path_factory):
    server = DnsServer(extra_zones={"fast.test": ZONE},
                       template_dir=tmp_path_factory.mktemp("no-templates")).start()
    yield server
    server.close()


def _resolver(server, **kwargs):
    return Resolver([("127.0.0.1", server.port)], timeout=kwargs.pop("timeout", 1.0), **kwargs)


def _texts(rdatas):
    return [b"".join(r.strings) for r in rdatas]


def _show(rdata):
    return b"".join(rdata.strings).decode() if hasattr(rdata, "strings") else rdata.address


def test_repeat_is_answered_without_a_query_and_is_a_copy(fast_dns):
    resolver = _resolver(fast_dns)
    first = resolver.query("long.fast.test", "TXT")
    assert _texts(first) == [b"long"]
    first.clear()                                   # the caller's list, not the cache's
    for spelling in ("long.fast.test", "LONG.Fast.Test", "long.fast.test."):
        assert _texts(resolver.query(spelling, "TXT")) == [b"long"]
    assert resolver.lookups == 1
    assert fast_dns.queries().count(("long.fast.test", "TXT")) >= 1


# Neither is "long.fast.test" with its final dot: the first is no name at all, the
# second ends in a label "test." (an escaped dot), in a zone BIND does not serve.
@pytest.mark.parametrize("name, expected, asked", [("long.fast.test..", [], 0),
                                                   (r"long.fast.test\.", DnsTempError, 1)])
def test_a_cached_name_does_not_answer_another_spelling(fast_dns, name, expected, asked):
    resolver = _resolver(fast_dns)
    assert _texts(resolver.query("long.fast.test", "TXT")) == [b"long"]
    if expected is DnsTempError:
        with pytest.raises(DnsTempError, match="no server answered"):
            resolver.query(name, "TXT")
    else:
        assert _texts(resolver.query(name, "TXT")) == expected
    assert resolver.lookups == 1 + asked


def test_positive_answer_expires_with_its_ttl(fast_dns):
    resolver = _resolver(fast_dns)
    assert _texts(resolver.query("short.fast.test", "TXT")) == [b"short"]
    assert _texts(resolver.query("short.fast.test", "TXT")) == [b"short"]
    assert resolver.lookups == 1
    time.sleep(1.2)                                 # TTL 1
    assert _texts(resolver.query("short.fast.test", "TXT")) == [b"short"]
    assert resolver.lookups == 2


def test_ttl_zero_is_not_cached(fast_dns):
    resolver = _resolver(fast_dns)
    for _ in range(3):
        assert _texts(resolver.query("zero.fast.test", "TXT")) == [b"zero"]
    assert resolver.lookups == 3


@pytest.mark.parametrize("name, rdtype", [("nothing.fast.test", "TXT"),   # NXDOMAIN
                                          ("mail.fast.test", "TXT")])     # NODATA
def test_negative_answers_are_cached_for_the_soa_minimum(fast_dns, name, rdtype):
    resolver = _resolver(fast_dns)
    for _ in range(3):
        assert resolver.query(name, rdtype) == []
    assert resolver.lookups == 1
    time.sleep(1.2)                                 # SOA minimum 1
    assert resolver.query(name, rdtype) == []
    assert resolver.lookups == 2


def test_nxdomain_of_one_type_answers_another_until_it_expires(fast_dns):
    resolver = _resolver(fast_dns)
    assert resolver.query("gone.fast.test", "TXT") == []
    assert resolver.query("gone.fast.test", "AAAA") == []    # the name-wide entry
    assert resolver.lookups == 1
    time.sleep(1.2)
    # the AAAA entry took the NXDOMAIN's remaining time, not a fresh negative TTL
    assert resolver.query("gone.fast.test", "AAAA") == []
    assert resolver.lookups == 2


def test_nxdomain_through_a_cname_does_not_hide_the_cname(fast_dns):
    resolver = _resolver(fast_dns)
    assert resolver.query("alias.fast.test", "TXT") == []     # NXDOMAIN at the target
    assert resolver.query("alias.fast.test", "TXT") == []
    assert resolver.lookups == 1
    [cname] = resolver.query("alias.fast.test", "CNAME")       # the alias itself exists
    assert cname.target.to_text() == "nowhere.fast.test."
    assert resolver.lookups == 2


def test_refused_is_remembered_as_a_failure_never_as_absence(fast_dns):
    resolver = _resolver(fast_dns, failure_ttl=1.0)
    name = "1.0.0.2.ip6.arpa"                       # outside the served zone: REFUSED
    with pytest.raises(DnsTempError, match="no server answered"):
        resolver.query(name, "PTR")
    before = fast_dns.query_count()
    for _ in range(3):
        with pytest.raises(DnsTempError, match="no server answered.*failure remembered"):
            resolver.query(name, "PTR")
    assert resolver.lookups == 1
    assert fast_dns.query_count() == before
    # another type of the same name is asked: it may well have failed for its own reasons
    with pytest.raises(DnsTempError):
        resolver.query(name, "AAAA")
    assert resolver.lookups == 2
    time.sleep(1.1)
    with pytest.raises(DnsTempError, match="no server answered"):
        resolver.query(name, "PTR")
    assert resolver.lookups == 3


def test_failures_are_remembered_for_thirty_seconds_by_default(fast_dns):
    assert FAILURE_TTL == 30
    resolver = _resolver(fast_dns)
    with pytest.raises(DnsTempError):
        resolver.query("example.invalid", "TXT")
    with pytest.raises(DnsTempError, match="up to 30 s"):
        resolver.query("example.invalid", "TXT")
    assert resolver.lookups == 1


@pytest.fixture
def silent_server():
    """A UDP socket that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_full_timeout_is_remembered_and_the_repeat_does_not_wait(silent_server):
    resolver = Resolver([("127.0.0.1", silent_server)], timeout=0.3)
    with pytest.raises(DnsTempError, match="timed out"):
        resolver.budget(5).txt("slow.example")
    sent = resolver.lookups
    assert sent >= 1
    with pytest.raises(DnsTempError, match="timed out.*failure remembered"):
        resolver.budget(5).txt("slow.example")
    assert resolver.lookups == sent              # answered from memory: nothing sent, no wait


def test_timeout_cut_short_by_the_budget_is_not_remembered(silent_server):
    resolver = Resolver([("127.0.0.1", silent_server)], timeout=1.0)
    with pytest.raises(DnsTempError, match="timed out"):
        resolver.budget(0.2).txt("slow.example")    # says nothing about the name
    sent = resolver.lookups
    with pytest.raises(DnsTempError, match="timed out"):
        resolver.budget(0.2).txt("slow.example")
    assert resolver.lookups > sent                  # asked again


def test_cached_answer_is_served_once_the_budget_is_spent(fast_dns):
    resolver = _resolver(fast_dns)
    assert _texts(resolver.query("long.fast.test", "TXT")) == [b"long"]
    spent = resolver.budget(0)
    assert _texts(spent.query("long.fast.test", "TXT")) == [b"long"]   # costs no waiting
    with pytest.raises(DnsTempError, match="budget spent"):
        spent.query("mail.fast.test", "AAAA")
    assert resolver.lookups == 1


def test_size_is_bounded_least_recently_used_first(fast_dns):
    resolver = _resolver(fast_dns, cache_size=2)
    for name, rdtype in (("long.fast.test", "TXT"), ("mail.fast.test", "AAAA"),
                         ("long.fast.test", "TXT"), ("ns.fast.test", "A")):
        assert resolver.query(name, rdtype)         # mail, the least recently used, goes
    assert resolver.lookups == 3
    resolver.query("long.fast.test", "TXT")
    assert resolver.lookups == 3
    assert [r.address for r in resolver.query("mail.fast.test", "AAAA")] == ["2001:db8::25"]
    assert resolver.lookups == 4


def test_many_threads_share_the_cache(fast_dns):
    resolver = _resolver(fast_dns)
    # TTL 60 each (the negative TTL here is 1 s: too short for this test)
    names = {("long.fast.test", "TXT"): ["long"], ("mail.fast.test", "AAAA"): ["2001:db8::25"],
             ("ns.fast.test", "A"): ["127.0.0.1"]}
    for name, rdtype in names:
        resolver.query(name, rdtype)
    warm = resolver.lookups
    small = _resolver(fast_dns, cache_size=2)       # evicting all the time
    wrong, errors = [], []

    def work():
        try:
            for _ in range(300):
                for (name, rdtype), expected in names.items():
                    for r in (resolver, small):
                        got = [_show(rdata) for rdata in r.query(name, rdtype)]
                        if got != expected:
                            wrong.append((name, got))
        except Exception as err:                     # reported below, not swallowed
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not wrong
    assert resolver.lookups == warm                 # the warm one never asked again
    assert small.lookups >= 3
