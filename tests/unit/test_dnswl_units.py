"""DNS whitelist answers, the baseline signal and the fallback status codes, pure. No I/O.

The answer classifier reads what a hostile or broken zone may send: hypothesis
checks that it never raises and that an error answer is never a listing."""
import ipaddress

import authres
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.config import PolicySection
from mx6milter.evidence.auth import AuthOutcome, DkimResult, SpfResult, render_auth_results
from mx6milter.evidence.dnswl import Answer, Listing, ZoneResult, classify, policy_txt, render_dnswl_results
from mx6milter.evidence.greenlist import check_baseline
from mx6milter.model import Evidence, Finding, SessionClass, Tier
from mx6milter.policy import decide, fallback_status

QUOTA = "query refused or over quota"
ANSWERS = [
    # A records                          result      address            category trust
    ([],                                 Answer("unlisted")),
    (["127.0.10.0"],                     Answer("listed", "127.0.10.0", 10, 0)),
    (["127.0.15.1"],                     Answer("listed", "127.0.15.1", 15, 1)),
    (["127.0.5.2"],                      Answer("listed", "127.0.5.2", 5, 2)),
    (["127.0.3.3"],                      Answer("listed", "127.0.3.3", 3, 3)),
    (["127.0.3.1", "127.0.9.3", "127.0.2.2"], Answer("listed", "127.0.9.3", 9, 3)),
    (["127.0.0.255"],                    Answer("error", "127.0.0.255", reason=QUOTA)),
    (["127.255.255.254"],                Answer("error", "127.255.255.254", reason="the list's error code")),
    (["127.255.255.255"],                Answer("error", "127.255.255.255", reason="the list's error code")),
    (["127.255.255.0"],                  Answer("error", "127.255.255.0", reason="the list's error code")),
    (["192.0.2.1"],                      Answer("error", "192.0.2.1", reason="outside 127.0.0.0/8")),
    (["0.0.0.0"],                        Answer("error", "0.0.0.0", reason="outside 127.0.0.0/8")),
    (["127.0.10.4"],                     Answer("error", "127.0.10.4",
                                                reason="not a dnswl.org answer (127.0.x.y, y 0-3)")),
    (["127.1.0.2"],                      Answer("error", "127.1.0.2",
                                                reason="not a dnswl.org answer (127.0.x.y, y 0-3)")),
    # an error beside a listing: the list has said nothing reliable
    (["127.0.10.3", "127.0.0.255"],      Answer("error", "127.0.0.255", reason=QUOTA)),
    (["garbage"],                        Answer("error", "garbage", reason="not an IPv4 address")),
]


@pytest.mark.parametrize("records,expected", ANSWERS)
def test_classify(records, expected):
    assert classify(records) == expected


def _is_listing(text: str) -> bool:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return address.packed[:2] == b"\x7f\x00" and address.packed[3] <= 3


@given(st.lists(st.one_of(st.ip_addresses(v=4).map(str), st.text(max_size=40),
                          st.sampled_from(["127.0.0.255", "127.255.255.254", "127.0.10.2"])),
                max_size=20))
def test_classify_never_raises_and_never_lists_on_an_error(records):
    answer = classify(records)
    if not records:
        assert answer == Answer("unlisted")
    elif all(_is_listing(r) for r in records):
        assert answer.result == "listed"
        assert answer.trust == max(ipaddress.IPv4Address(r).packed[3] for r in records)
    else:
        assert answer.result == "error" and answer.trust == 0
        assert answer.address.isascii() and answer.address.isprintable()


@given(st.lists(st.binary(max_size=600), max_size=5))
def test_policy_txt_is_printable_and_bounded(records):
    text = policy_txt(records)
    assert len(text) <= 120 and all(" " <= ch <= "~" and ch not in '"\\;' for ch in text)


# --- Authentication-Results (RFC 8904) --------------------------------------------------


def _auth(**kw):
    base = dict(spf=SpfResult("none", "example.com", "mailfrom", "a@example.com"))
    base.update(kw)
    return AuthOutcome(**base)


def test_dnswl_results_render_and_parse_back():
    zones = (ZoneResult("list.dnswl.org", "pass", "127.0.10.2", 'example "mail"; (x) https://x/?s=1',
                        trust=2),
             ZoneResult("dwl.dnswl.org", "pass", "127.0.3.3", domain="example.com", trust=3),
             ZoneResult("bad.example", "permerror", "127.0.0.255", reason="query refused or over quota"),
             ZoneResult("slow.example", "temperror", reason="x.slow.example/A: timed out"))
    value = render_auth_results("mx.example.org", _auth(), render_dnswl_results(Listing(results=zones)))
    assert value.count(";") == 7      # spf, dkim, dmarc, four dnswl: the TXT with ';' left out
    assert value.split("; dmarc=none; ", 1)[1] == (
        "dnswl=pass dns.zone=list.dnswl.org policy.ip=127.0.10.2; "
        "dnswl=pass (d=example.com) dns.zone=dwl.dnswl.org policy.ip=127.0.3.3; "
        'dnswl=permerror reason="query refused or over quota" dns.zone=bad.example '
        "policy.ip=127.0.0.255; "
        'dnswl=temperror reason="x.slow.example/A: timed out" dns.zone=slow.example')
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    dnswl = [r for r in parsed.results if r.method == "dnswl"]
    # authres 1.2 predates RFC 8904 and skips its "dns" ptype (dns.zone, checked above)
    assert [(r.result, [(p.type, p.name, p.value) for p in r.properties]) for r in dnswl] == [
        ("pass", [("policy", "ip", "127.0.10.2")]),
        ("pass", [("policy", "ip", "127.0.3.3")]),
        ("permerror", [("policy", "ip", "127.0.0.255")]),
        ("temperror", []),
    ]
    assert dnswl[2].reason == "query refused or over quota"


def test_policy_txt_is_written_as_a_quoted_string_and_read_back():
    txt = policy_txt([b'Example "mail"; \\ https://dnswl.org/s/?s=8\x00\xff'])
    assert txt == "Example ?mail?? ? https://dnswl.org/s/?s=8??"
    value = render_auth_results("mx.example.org", _auth(), render_dnswl_results(Listing(results=(
        ZoneResult("list.dnswl.org", "pass", "127.0.10.2", txt, trust=2),))))
    assert value.endswith('; dnswl=pass dns.zone=list.dnswl.org policy.ip=127.0.10.2 '
                          'policy.txt="Example ?mail?? ? https://dnswl.org/s/?s=8??"')
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    assert [p.value for p in parsed.results[-1].properties if (p.type, p.name) == ("policy", "txt")] \
        == [txt]


def test_a_txt_with_a_semicolon_is_left_out_rather_than_split():
    value = render_auth_results("mx.example.org", _auth(), render_dnswl_results(Listing(results=(
        ZoneResult("list.dnswl.org", "pass", "127.0.10.2", "a; dkim=pass", trust=2),))))
    assert value.endswith("; dnswl=pass dns.zone=list.dnswl.org policy.ip=127.0.10.2")


# --- the baseline signal ----------------------------------------------------------------

PTR_OK = Finding("fcrdns", "helo-mismatch", "ptr=mail.example.com helo=other")


@pytest.mark.parametrize("fcrdns,names,auth,expected", [
    (PTR_OK, ("mail.example.com",), _auth(spf=SpfResult("pass", "example.com", "mailfrom", "a@example.com")),
     "baseline=pass(ptr=mail.example.com spf=example.com)"),
    (PTR_OK, ("mail.example.com",), _auth(dkim=(DkimResult("fail", "a.example"),
                                                DkimResult("pass", "b.example"))),
     "baseline=pass(ptr=mail.example.com dkim=b.example)"),
    (PTR_OK, ("mail.example.com",), _auth(spf=SpfResult("softfail", "example.com")),
     "baseline=miss(ptr=mail.example.com but no SPF or DKIM pass)"),
    (Finding("fcrdns", "fail", "x"), (), _auth(spf=SpfResult("pass", "example.com")),
     "baseline=miss(no forward-confirmed PTR)"),
    (Finding("fcrdns", "temperror", "x"), (), _auth(spf=SpfResult("pass", "example.com")),
     "baseline=temperror(PTR or its forward lookup failed)"),
    # the last-resort record's pass is our guess, not the sender's SPF
    (PTR_OK, ("mail.example.com",), _auth(spf=SpfResult("none", "example.com", last_resort="pass")),
     "baseline=miss(ptr=mail.example.com but no SPF or DKIM pass)"),
])
def test_baseline(fcrdns, names, auth, expected):
    assert str(check_baseline(fcrdns, names, auth)) == expected


# --- the fallback's status code -----------------------------------------------------------

V6 = SessionClass.IPV6


@pytest.mark.parametrize("mode,failures,authenticated,reason,key,status", [
    ("defensive", (), False, "not-authenticated", "defensive_status_unauthenticated", "4.7.26"),
    ("defensive", (), True, "no-positive-evidence", "defensive_status", "4.7.1"),
    ("defensive", ("dns-unavailable",), False, "dns-unavailable", "defensive_status_dns", "4.4.3"),
    ("defensive", ("dns-unavailable",), True, "dns-unavailable", "defensive_status_dns", "4.4.3"),
    ("defensive", ("redis-unavailable",), True, "redis-unavailable", "defensive_status_redis", "4.3.0"),
    ("defensive", ("dns-unavailable", "redis-unavailable"), False, "redis-unavailable",
     "defensive_status_redis", "4.3.0"),
    ("report", (), False, "not-authenticated", "defensive_status_unauthenticated", "4.7.26"),
    ("mx6", (), False, "not-authenticated", "mx6_status", "5.5.7"),
    ("mx6", ("redis-unavailable",), True, "redis-unavailable", "mx6_status", "5.5.7"),
])
def test_fallback_status_by_reason(mode, failures, authenticated, reason, key, status):
    policy = PolicySection(mode=mode)
    evidence = Evidence(V6, failures=failures, authenticated=authenticated)
    assert fallback_status(policy, evidence) == (reason, key, status)
    decision = decide(policy, evidence)
    assert decision.tier is Tier.NONE
    reply = decision.would_reply if mode == "report" else decision.reply
    assert reply.status == status
    assert decision.reasons == (failures or (reason,))


def test_each_status_is_configurable():
    policy = PolicySection(defensive_status="4.7.0", defensive_status_unauthenticated="4.7.25",
                           defensive_status_dns="4.4.0", defensive_status_redis="4.3.5")
    assert [decide(policy, Evidence(V6, failures=f, authenticated=a)).reply.status
            for f, a in [((), True), ((), False), (("dns-unavailable",), True),
                         (("redis-unavailable",), True)]] == ["4.7.0", "4.7.25", "4.4.0", "4.3.5"]
