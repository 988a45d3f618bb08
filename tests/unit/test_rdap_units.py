"""RDAP answers and bootstrap files read by evidence/rdap.py, and the signals judged
from cached values; no I/O but reading tests/data/rdap. Hostile JSON never raises
anything but RdapError."""
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mx6milter.evidence.rdap import (DAY, Bootstrap, DomainRecord, RdapError, judge_rdap,
                                     judge_registrar, load_json, network_field, network_value,
                                     parse_domain, parse_network, parse_time, related_url)
from mx6milter.store import Hit

DATA = Path(__file__).resolve().parents[1] / "data" / "rdap"
NOW = 1_800_000_000


def answer(name):
    return load_json((DATA / name).read_bytes())


def test_gtld_answer_registrar_id_registration_and_public_registrant():
    record = parse_domain(answer("gtld-domain.json"))
    assert record == DomainRecord(292, parse_time("2003-04-16T15:28:41Z"), "public")
    assert record.registered == 1050506921


def test_cctld_answer_redacted_registrant_no_iana_id():
    record = parse_domain(answer("cctld-domain.json"))
    assert record.registrar_id is None and record.registrant == "redacted"
    assert record.registered == parse_time("2026-11-01T09:30:00+00:00")


def test_rir_network_with_abuse_entity():
    record = parse_network(answer("rir-network.json"))
    assert record.abuse and record.networks == (ipaddress.IPv6Network("2001:db8:8::/48"),)
    client = ipaddress.IPv6Address("2001:db8:8::50")
    assert network_field(record, client) == "20010db80008/48"
    assert network_value(record, client, 99) == "yes 99"


@pytest.mark.parametrize("registrant, state", [
    ({"vcardArray": ["vcard", [["fn", {}, "text", "REDACTED FOR PRIVACY"]]]}, "redacted"),
    ({"vcardArray": ["vcard", [["org", {}, "text", "Domains By Proxy, LLC"]]]}, "redacted"),
    ({"vcardArray": ["vcard", [["fn", {}, "text", "Withheld for Privacy ehf"]]]}, "redacted"),
    ({"vcardArray": ["vcard", [["fn", {}, "text", ""]]]}, "redacted"),
    ({"vcardArray": ["vcard", [["fn", {}, "text", "Jane Doe"]]]}, "public"),
])
def test_registrant_states(registrant, state):
    data = {"entities": [dict(registrant, roles=["registrant"])]}
    assert parse_domain(data).registrant == state
    assert parse_domain({"entities": []}).registrant == "absent"


def test_rfc9537_redaction_of_the_registrant():
    data = answer("gtld-domain.json")
    data["redacted"] = [{"name": {"description": "Registrant Name"}, "method": "removal"}]
    assert parse_domain(data).registrant == "redacted"


def test_network_by_range_and_registry_blocks_do_not_count():
    client = ipaddress.IPv6Address("2001:db8:8::50")
    ranged = parse_network({"startAddress": "2001:db8::", "endAddress":
                            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                            "entities": [{"roles": ["abuse"], "vcardArray":
                                          ["vcard", [["email", {}, "text", "a@b.example"]]]}]})
    assert network_field(ranged, client) == "20010db8/32" and network_value(ranged, client, 1) == "yes 1"
    block = parse_network({"cidr0_cidrs": [{"v6prefix": "2000::", "length": 3}],
                           "entities": [{"roles": ["abuse"], "vcardArray":
                                         ["vcard", [["email", {}, "text", "a@b.example"]]]}]})
    assert network_field(block, client) == "20010db800080000/64"       # the client's /64
    assert network_value(block, client, 1) == "no 1"
    assert network_value(None, client, 1) == "notfound 1"
    no_abuse = parse_network({"cidr0_cidrs": [{"v6prefix": "2001:db8::", "length": 32}],
                              "entities": [{"roles": ["abuse"]}]})
    assert network_value(no_abuse, client, 1) == "no 1"


def test_wrong_object_class_and_non_objects_are_errors():
    with pytest.raises(RdapError):
        parse_domain({"objectClassName": "ip network"})
    with pytest.raises(RdapError):
        parse_network({"objectClassName": "domain"})
    for body in (b"[]", b"nonsense", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"):
        with pytest.raises(RdapError):
            load_json(body)


def test_related_link_of_a_thin_registry():
    data = {"links": [{"rel": "self", "href": "https://a.example/x", "type": "application/rdap+json"},
                      {"rel": "related", "href": "https://rdap.registrar.example/domain/x.com",
                       "type": "application/rdap+json"},
                      {"rel": "related", "href": "javascript:alert(1)", "type": "application/rdap+json"}]}
    assert related_url(data) == "https://rdap.registrar.example/domain/x.com"
    assert related_url({"links": [{"rel": "related", "href": "ftp://x", "type":
                                   "application/rdap+json"}]}) == ""


def test_bootstrap_longest_match_https_first_and_errors():
    dns = Bootstrap.parse(json.dumps({"services": [
        [["uk"], ["http://uk.example/rdap"]],
        [["co.uk"], ["http://co-uk.example/", "https://co-uk.example/"]],
    ]}).encode(), "domain")
    assert dns.url("shop.co.uk") == "https://co-uk.example/domain/shop.co.uk"
    assert dns.url("example.uk") == "http://uk.example/rdap/domain/example.uk"
    assert dns.url("example.com") == ""
    ip = Bootstrap.parse(json.dumps({"services": [
        [["2001:db8::/32"], ["http://rir.example/"]],
        [["2001:db8:8::/48"], ["http://nir.example/"]]]}).encode(), "ip")
    assert ip.url(ipaddress.IPv6Address("2001:db8:8::1")) == "http://nir.example/ip/2001:db8:8::1"
    assert ip.url(ipaddress.IPv6Address("2001:db8:9::1")) == "http://rir.example/ip/2001:db8:9::1"
    for bad in (b"{}", b'{"services": [["x"]]}', b'{"services": [[["zz::/999"], ["http://a/"]]]}'):
        with pytest.raises(RdapError):
            Bootstrap.parse(bad, "ip")


def test_shipped_bootstrap_files_parse():
    root = Path(__file__).resolve().parents[2] / "mx6milter" / "data" / "rdap"
    dns = Bootstrap.parse((root / "dns.json").read_bytes(), "domain")
    assert dns.url("example.org").startswith("https://")
    ip = Bootstrap.parse((root / "ipv6.json").read_bytes(), "ip")
    assert ip.url(ipaddress.IPv6Address("2a00:1450::1")).startswith("https://rdap.db.ripe.net/")


# --- judging the cached values ---------------------------------------------------------------


def hits(domain_value=None, net_value=None, listed=()):
    out = []
    if domain_value is not None:
        out.append(Hit("rdap", "domain", "partner.org", "v", domain_value))
    if net_value is not None:
        out.append(Hit("rdap", "ip", "", "20010db80008/48", net_value))
        out.append(Hit("rdap", "ip", "", "20010db8/32", "no 0"))   # the longest prefix wins
    out += [Hit("rdap", src, "registrar", "292", "0") for src in listed]
    return out


OLD = f"292 {NOW - 400 * DAY} public {NOW + DAY}"


def test_judge_registrar():
    assert str(judge_registrar(hits(OLD, listed=["local"]), "partner.org")) == \
        "registrar=pass(partner.org iana=292 source=local)"
    assert judge_registrar(hits(OLD), "partner.org").result == "unlisted"
    assert judge_registrar(hits(), "partner.org").result == "pending"
    assert judge_registrar(hits(f"- - notfound {NOW}"), "partner.org").result == "unknown"
    assert judge_registrar(hits("- 5 public 9"), "partner.org").result == "unknown"
    assert judge_registrar(hits("garbage"), "partner.org").result == "unknown"


def test_judge_rdap():
    def judge(domain_value, net_value="yes 0"):
        return judge_rdap(hits(domain_value, net_value), "partner.org", 90 * DAY, NOW)
    assert str(judge(OLD)) == ("rdap=pass(partner.org age=400d registrant=public "
                               "network=2001:db8:8::/48 abuse=yes)")
    assert str(judge(f"292 {NOW - 10 * DAY} public 0")) == \
        "rdap=fail(partner.org registered 10d ago, needs 90d)"
    assert str(judge(f"292 {NOW - 400 * DAY} redacted 0")) == "rdap=fail(partner.org registrant=redacted)"
    assert judge(OLD, "no 0").detail == "partner.org network=2001:db8:8::/48 abuse=no"
    assert judge("292 - public 0").result == "fail"
    assert judge(OLD, None).result == "pending" and judge(None).result == "pending"


# --- hostile input -----------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=30),
                    lambda children: st.lists(children, max_size=5)
                    | st.dictionaries(st.sampled_from(["entities", "roles", "publicIds", "type",
                                                       "identifier", "vcardArray", "events",
                                                       "eventAction", "eventDate", "remarks",
                                                       "redacted", "name", "description",
                                                       "cidr0_cidrs", "v6prefix", "length",
                                                       "startAddress", "endAddress", "links",
                                                       "rel", "href", "objectClassName",
                                                       "title", "fn", "org"]) | st.text(max_size=8),
                                      children, max_size=6),
                    max_leaves=60)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["entities", "events", "redacted", "links",
                                        "cidr0_cidrs", "startAddress", "endAddress"]),
                       JSON, max_size=7))
def test_any_json_object_parses_or_is_rdap_error(data):
    for parse in (parse_domain, parse_network):
        try:
            parse(data)
        except RdapError:
            pass
    related_url(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_load_or_are_rdap_error(body):
    try:
        data = load_json(body)
    except RdapError:
        return
    assert isinstance(data, dict)
    try:
        Bootstrap.parse(body, "domain")
    except RdapError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_cached_values_never_crash_the_judges(value):
    found = hits(value, value, listed=["local"])
    assert judge_registrar(found, "partner.org").kind == "registrar"
    assert judge_rdap(found, "partner.org", 90 * DAY, NOW).kind == "rdap"


def test_rdap_signals_need_rdap_enabled_and_are_off_by_default():
    from mx6milter.config import ConfigError, parse_config
    config = parse_config("")
    assert (config.rdap.enabled, config.greenlist.registrar, config.greenlist.rdap) == \
        (False, False, False)
    assert config.greenlist.rdap_min_age == 90 * DAY and config.rdap.cache_ttl == 7 * DAY
    with pytest.raises(ConfigError, match=r"\[rdap\] enabled = yes"):
        parse_config("[greenlist]\nregistrar = yes\n")
    with pytest.raises(ConfigError, match="rdap_min_age"):
        parse_config("[rdap]\nenabled = yes\n[greenlist]\nrdap = yes\nrdap_min_age = 90\n")
    enabled = parse_config("[rdap]\nenabled = yes\n[greenlist]\nrdap = yes\nregistrar = yes\n")
    assert enabled.greenlist.enabled_signals()[-2:] == ("registrar", "rdap")
