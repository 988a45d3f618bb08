"""SPF records as pyspf reads them for check_spf, fed hostile text. No I/O: outside a
check, mx6milter's DNS hook (evidence.auth._spf_lookup) answers every lookup with a
temporary error, so only what the record itself says is evaluated."""
import ipaddress

from hypothesis import assume, given, settings, strategies as st

import mx6milter.evidence.auth  # noqa: F401  (installs the DNS hook into pyspf)
import spf

RESULTS = {"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"}
PIECES = ["v=spf1", " ", "ip6:", "ip4:", "2001:db8::/32", "::/0", "/129", "-all", "~all", "?all",
          "+all", "include:", "redirect=", "exists:", "a", "mx", "ptr", "%{l}", "%{d}", "%{ir}",
          "%{i}", "%%", "%", "{", "}", "exp=", "x.example", "v=spf1 ", ":", "/", "\x00", "\u00e9",
          "a:%{l1r+-}", "ip6:2001:db8::1/128"]
hostile_record = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)),
                          max_size=20).map("".join)


def check(record, client="2001:db8::1"):
    query = spf.query(i=client, s="user@example.org", h="mx.example.org", timeout=1)
    return query.check(spf=record)[0]


@settings(max_examples=200, deadline=None)
@given(hostile_record)
def test_any_record_gives_an_spf_result(record):
    assert check(record) in RESULTS


@settings(max_examples=150, deadline=None)
@given(st.lists(st.ip_addresses(v=6).flatmap(
           lambda a: st.integers(0, 128).map(lambda n: ipaddress.ip_network((a, n), strict=False))),
                max_size=5),
       st.ip_addresses(v=6), st.sampled_from(["-all", "~all"]))
def test_ip6_mechanisms_pass_exactly_the_clients_they_cover(networks, client, default):
    assume(client.ipv4_mapped is None)         # an IPv4 client to SPF (RFC 7208 5.6); never judged
    record = " ".join(["v=spf1"] + [f"ip6:{n}" for n in networks] + [default])
    expected = "pass" if any(client in n for n in networks) else \
        {"-all": "fail", "~all": "softfail"}[default]
    assert check(record, str(client)) == expected


def test_lookups_outside_a_check_are_temporary_errors():
    assert check("v=spf1 include:x.example -all") == "temperror"
    assert check("v=spf1 ip6:2001:db8::/32 -all") == "pass"
    assert check("v=spf1 ip6:zz -all") == "permerror"
