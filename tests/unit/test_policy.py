"""The pure decision and session classification, as tables. No I/O."""
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mx6milter.config import PolicySection
from mx6milter.model import Action, Evidence, Finding, Session, SessionClass, Tier
from mx6milter.policy import classify, client_address, decide, fallback_status, parse_client_ip

IP_HIT = Finding("ip", "pass", "2001:db8:6::/48 source=local")
DOMAIN_HIT = Finding("domain", "pass", "example.net via=dmarc source=local")
FCRDNS = Finding("fcrdns", "pass", "mail.example.net")

V6 = SessionClass.IPV6
V4, AUTH = SessionClass.IPV4, SessionClass.AUTHENTICATED
TRUST, LOCAL = SessionClass.TRUSTED, SessionClass.LOCAL

DECISIONS = [
    # mode        class  whitelist      greenlist  failures                tier              action
    ("defensive", V4,    (),            (),        (),                     Tier.BYPASS,      Action.ACCEPT),
    ("defensive", AUTH,  (),            (),        (),                     Tier.BYPASS,      Action.ACCEPT),
    ("defensive", TRUST, (),            (),        (),                     Tier.BYPASS,      Action.ACCEPT),
    ("defensive", LOCAL, (),            (),        (),                     Tier.BYPASS,      Action.ACCEPT),
    ("defensive", V6,    (IP_HIT,),     (),        (),                     Tier.WHITELISTED, Action.ACCEPT),
    ("defensive", V6,    (IP_HIT,),     (FCRDNS,), (),                     Tier.WHITELISTED, Action.ACCEPT),
    ("defensive", V6,    (IP_HIT,),     (),        ("dns-unavailable",),   Tier.WHITELISTED, Action.ACCEPT),
    ("defensive", V6,    (),            (FCRDNS,), (),                     Tier.GREENLISTED, Action.ACCEPT),
    ("defensive", V6,    (),            (),        (),                     Tier.NONE,        Action.TEMPFAIL),
    ("defensive", V6,    (),            (),        ("redis-unavailable",), Tier.NONE,        Action.TEMPFAIL),
    ("mx6",       V6,    (),            (),        (),                     Tier.NONE,        Action.REJECT),
    ("mx6",       V6,    (DOMAIN_HIT,), (),        (),                     Tier.WHITELISTED, Action.ACCEPT),
    ("mx6",       V4,    (),            (),        (),                     Tier.BYPASS,      Action.ACCEPT),
    ("report",    V6,    (),            (),        (),                     Tier.NONE,        Action.ACCEPT),
    ("report",    V6,    (),            (FCRDNS,), (),                     Tier.GREENLISTED, Action.ACCEPT),
]


@pytest.mark.parametrize("mode,session_class,whitelist,greenlist,failures,tier,action", DECISIONS)
def test_decide(mode, session_class, whitelist, greenlist, failures, tier, action):
    policy = PolicySection(mode=mode)
    evidence = Evidence(session_class, whitelist=whitelist, greenlist=greenlist, failures=failures,
                        auth_results="mx.example.org; spf=fail smtp.mailfrom=a@b.example")
    decision = decide(policy, evidence)
    assert (decision.tier, decision.action) == (tier, action)
    if action is not Action.ACCEPT:
        assert decision.reply is not None and decision.header is None
        assert decision.reasons == (failures or ("not-authenticated",))
    else:
        assert decision.reply is None
    if tier is Tier.BYPASS:
        assert decision.header is None
    if tier is Tier.GREENLISTED:
        assert "subject-to-content-filtering" in decision.header


REPLIES = [
    ("defensive", "451", "4.7.26", Action.TEMPFAIL),
    ("mx6", "550", "5.5.7", Action.REJECT),
]


@pytest.mark.parametrize("mode,code,status,action", REPLIES)
def test_fallback_reply_lines(mode, code, status, action):
    policy = PolicySection(mode=mode, registration_url="https://example.org/ipv6")
    decision = decide(policy, Evidence(V6, auth_results="mx.example.org; spf=none"))
    assert decision.action is action
    assert (decision.reply.code, decision.reply.status) == (code, status)
    text = policy.mx6_text if mode == "mx6" else policy.defensive_text
    assert decision.reply.lines == (text, "Authentication-Results: mx.example.org; spf=none",
                                    "To be accepted over IPv6: https://example.org/ipv6")


def test_report_mode_records_the_reply_it_would_have_given():
    decision = decide(PolicySection(mode="report"), Evidence(V6))
    assert decision.would_reply.code == "451"
    assert decision.header.startswith("none; action=fallback-reported; reply=451 4.7.26")


def test_verdict_header_names_evidence_and_failures():
    decision = decide(PolicySection(authserv_id="mx.example.org"),
                      Evidence(V6, whitelist=(IP_HIT,), failures=("dns-unavailable",)))
    assert decision.header == ("whitelisted; evidence=ip=pass(2001:db8:6::/48 source=local); "
                               "failures=dns-unavailable; mode=defensive; by=mx.example.org")


TRUSTED = (ipaddress.ip_network("2001:db8:7::/48"), ipaddress.ip_network("198.51.100.0/24"))

CLASSES = [
    # client_ip,                auth,    class
    ("192.0.2.1",               "",      SessionClass.IPV4),
    ("::ffff:10.0.0.2",         "",      SessionClass.IPV4),
    ("::ffff:198.51.100.9",     "",      SessionClass.TRUSTED),
    ("2001:db8::1",             "",      SessionClass.IPV6),
    ("IPv6:2001:db8::1",        "",      SessionClass.IPV6),
    ("[2001:db8::1]",           "",      SessionClass.IPV6),
    ("fe80::1%eth0",            "",      SessionClass.IPV6),
    ("2001:db8:7::99",          "",      SessionClass.TRUSTED),
    ("198.51.100.7",            "",      SessionClass.TRUSTED),
    ("2001:db8::1",             "alice", SessionClass.AUTHENTICATED),
    ("192.0.2.1",               "alice", SessionClass.AUTHENTICATED),
    (None,                      "",      SessionClass.LOCAL),
    ("",                        "",      SessionClass.LOCAL),
    ("not-an-address",          "",      SessionClass.LOCAL),
    ("2001:db8::1::2",          "",      SessionClass.LOCAL),
]


@pytest.mark.parametrize("client_ip,auth,expected", CLASSES)
def test_classify(client_ip, auth, expected):
    assert classify(Session(client_ip=client_ip, auth_authen=auth), TRUSTED) is expected


def test_parse_client_ip_rejects_garbage():
    assert parse_client_ip("999.1.1.1") is None
    assert parse_client_ip("X::1") is None and parse_client_ip("::1X") is None
    assert parse_client_ip("fe80::1%a%b") == ipaddress.ip_address("fe80::1")
    assert parse_client_ip("2001:db8::1") == ipaddress.ip_address("2001:db8::1")


address_text = st.lists(st.sampled_from(["1", "2001", "db8", ":", "::", ".", "255", "256", "0",
                                        "ffff", "fFfF", "%", "eth0", "[", "]", "IPv6:", " ",
                                        "x", "1.2.3.4", "\u0661"]), max_size=12).map("".join)


@settings(max_examples=2000)
@given(address_text)
def test_parse_client_ip_is_what_ip_address_gives(text):
    bare = text.strip().strip("[]")
    bare = (bare[5:] if bare.lower().startswith("ipv6:") else bare).split("%", 1)[0]
    try:
        expected = ipaddress.ip_address(bare)
    except ValueError:
        expected = None
    got = parse_client_ip(text)
    assert got == expected and type(got) is type(expected)


def test_client_address_is_parsed_once_per_client_ip():
    session = Session(client_ip="2001:db8::25")
    first = client_address(session)
    assert first == ipaddress.ip_address("2001:db8::25")
    assert client_address(session) is first                     # kept
    assert classify(session) is V6 and session.parsed_client_ip == ("2001:db8::25", first)
    session.client_ip = "192.0.2.1"                               # another text: parsed again
    assert client_address(session) == ipaddress.ip_address("192.0.2.1")
    assert classify(session) is V4
    session.client_ip = None
    assert client_address(session) is None and classify(session) is SessionClass.LOCAL
    assert Session(client_ip="2001:db8::25") == Session(client_ip="2001:db8::25")


# --- what each decision carries, pinned (mutation testing found these unchecked) --------------

NET = Finding("network", "pass", "2001:db8::/32")


def test_reasons_name_the_class_or_the_findings_that_counted():
    policy = PolicySection()
    assert decide(policy, Evidence(V4)).reasons == ("ipv4",)
    assert decide(policy, Evidence(TRUST)).reasons == ("trusted",)
    whitelisted = decide(policy, Evidence(V6, whitelist=(IP_HIT, DOMAIN_HIT), greenlist=(FCRDNS,)))
    assert whitelisted.reasons == (str(IP_HIT), str(DOMAIN_HIT))
    greenlisted = decide(policy, Evidence(V6, greenlist=(FCRDNS, NET)))
    assert greenlisted.reasons == (str(FCRDNS), str(NET))
    reported = decide(PolicySection(mode="report"), Evidence(V6, failures=("dns-unavailable",)))
    assert reported.reasons == ("dns-unavailable",)


def test_greenlisted_header_lists_the_greenlist_findings_and_every_failure():
    decision = decide(PolicySection(authserv_id="mx.example.org"),
                      Evidence(V6, whitelist=(), greenlist=(FCRDNS, NET),
                               failures=("dns-unavailable", "redis-unavailable")))
    assert decision.header == (
        "greenlisted; subject-to-content-filtering; "
        "evidence=fcrdns=pass(mail.example.net),network=pass(2001:db8::/32); "
        "failures=dns-unavailable,redis-unavailable; mode=defensive; by=mx.example.org")


def test_report_mode_header_in_full():
    decision = decide(PolicySection(mode="report", authserv_id="mx.example.org"), Evidence(V6))
    assert decision.header == ("none; action=fallback-reported; reply=451 4.7.26; mode=report; "
                               "by=mx.example.org")
    assert decision.reply is None and decision.reasons == ("not-authenticated",)


@pytest.mark.parametrize("mode, failures, authenticated, reason, key, status", [
    ("defensive", ("redis-unavailable", "dns-unavailable"), True, "redis-unavailable",
     "defensive_status_redis", "4.3.0"),
    ("defensive", ("dns-unavailable",), True, "dns-unavailable", "defensive_status_dns", "4.4.3"),
    ("defensive", ("other",), False, "not-authenticated", "defensive_status_unauthenticated", "4.7.26"),
    ("defensive", (), True, "no-positive-evidence", "defensive_status", "4.7.1"),
    ("mx6", ("dns-unavailable",), False, "dns-unavailable", "mx6_status", "5.5.7"),
    ("report", (), False, "not-authenticated", "defensive_status_unauthenticated", "4.7.26"),
])
def test_fallback_status_by_reason(mode, failures, authenticated, reason, key, status):
    evidence = Evidence(V6, failures=failures, authenticated=authenticated)
    assert fallback_status(PolicySection(mode=mode), evidence) == (reason, key, status)
    assert decide(PolicySection(mode=mode), evidence).reasons == (failures or (reason,))


@pytest.mark.parametrize("text", ["IPv6:2001:db8:7::99", "ipv6:2001:db8:7::99", "[IPv6:2001:db8:7::99]",
                                  " 2001:db8:7::99 ", "[2001:db8:7::99]", "2001:db8:7::99%lo"])
def test_sendmail_forms_of_the_client_address(text):
    assert parse_client_ip(text) == ipaddress.ip_address("2001:db8:7::99")


@pytest.mark.parametrize("mode", ["defensive", "mx6"])
def test_a_message_not_kept_for_want_of_memory_is_a_451_in_every_enforcing_mode(mode):
    from mx6milter import membudget
    decision = decide(PolicySection(mode=mode), Evidence(V6, failures=(membudget.REASON,)))
    assert decision.action is Action.TEMPFAIL and decision.reasons == (membudget.REASON,)
    assert (decision.reply.code, decision.reply.status) == ("451", "4.3.1")
