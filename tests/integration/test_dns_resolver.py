"""mx6milter.dns against a real BIND on loopback: answers, the TTL cache, failures, the budget."""
import socket
import time

import pytest

from mx6milter.dns import DnsTempError, Resolver

from servers import free_port


@pytest.fixture
def resolver(dns_server):
    return Resolver([("127.0.0.1", dns_server.port)], timeout=1.0)


def _count(dns_server, name, rdtype):
    return dns_server.queries().count((name, rdtype))


def test_answers_come_from_the_zone_files(resolver):
    budget = resolver.budget(3)
    assert budget.txt("example.com") == [b"v=spf1 ip6:2001:db8:10::/48 -all"]
    assert [r.address for r in budget.query("mail.example.com", "AAAA")] == ["2001:db8:10::25"]


def test_txt_strings_of_one_record_are_joined(resolver, dkim_keys):
    # the 2048-bit key is published as several <=255-byte strings
    [record] = resolver.budget(3).txt("rsa._domainkey.example.com")
    assert record == f"v=DKIM1; k=rsa; p={dkim_keys.rsa_public}".encode()


def test_positive_answer_cached_for_its_ttl(resolver, dns_server):
    name = "i1.example.com"
    before = _count(dns_server, name, "TXT")
    for _ in range(3):
        assert resolver.budget(3).txt(name) == [b"v=spf1 -all"]
    assert _count(dns_server, name, "TXT") == before + 1
    assert resolver.lookups == 1


def test_nxdomain_and_nodata_are_cached_too(resolver, dns_server):
    budget = resolver.budget(3)
    for _ in range(3):
        assert budget.query("no-such-name.example.com", "TXT") == []       # NXDOMAIN
        assert budget.query("mail.example.com", "MX") == []                # NODATA
    assert _count(dns_server, "no-such-name.example.com", "TXT") == 1
    assert _count(dns_server, "mail.example.com", "MX") == 1
    # NXDOMAIN covers every type of the name: no second query for another type
    assert budget.query("no-such-name.example.com", "AAAA") == []
    assert _count(dns_server, "no-such-name.example.com", "AAAA") == 0


def test_separate_resolvers_have_separate_caches(dns_server):
    name = "i2.example.com"
    before = _count(dns_server, name, "TXT")
    for _ in range(2):
        Resolver([("127.0.0.1", dns_server.port)], timeout=1.0).budget(3).txt(name)
    assert _count(dns_server, name, "TXT") == before + 2


def test_dead_server_is_a_temporary_error_within_the_timeout():
    resolver = Resolver([("127.0.0.1", free_port(socket.AF_INET))], timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DnsTempError):
        resolver.budget(5).txt("example.com")
    assert time.monotonic() - started < 1.0


def test_silent_server_times_out_and_the_budget_bounds_the_message():
    # A UDP socket that receives queries and never answers.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = Resolver([("127.0.0.1", silent.getsockname()[1])], timeout=0.5)
        budget = resolver.budget(1.0)
        started = time.monotonic()
        failures = 0
        for name in ("a.example.com", "b.example.com", "c.example.com", "d.example.com"):
            with pytest.raises(DnsTempError):
                budget.txt(name)
            failures += 1
        elapsed = time.monotonic() - started
        assert failures == 4
        # 4 lookups x 0.5 s would be 2 s; the 1 s budget cuts it short
        assert 0.9 < elapsed < 1.5
        with pytest.raises(DnsTempError, match="budget spent"):
            budget.txt("e.example.com")
    finally:
        silent.close()


def test_refused_name_outside_the_served_zones_is_temporary(resolver):
    # BIND is authoritative only and refuses other names: not an answer, so not "no record"
    with pytest.raises(DnsTempError):
        resolver.budget(3).txt("example.invalid")


@pytest.mark.parametrize("name", ["", "a..example.com", "x" * 64 + ".example.com",
                                  ".".join(["abcdefghi"] * 30), "bad\\", "\udcff.example.com",
                                  "-.example.com\x00"])
def test_names_that_cannot_exist_are_empty_answers_without_a_query(resolver, dns_server, name):
    before = dns_server.query_count()
    assert resolver.budget(3).query(name, "TXT") == []
    assert dns_server.query_count() == before


def test_unicode_name_is_looked_up_as_a_label(resolver, dns_server):
    assert resolver.budget(3).txt("bücher.example") == [b"v=spf1 ip6:2001:db8:13::/48 -all"]
    assert ("xn--bcher-kva.example", "TXT") in dns_server.queries()
