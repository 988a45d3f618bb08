"""DNS whitelists against the real BIND (tests/data/zones/dnswl.example.zone) and a real Redis:
listed clients at trust 0-3, error answers, an unlisted client, a refusing zone, a domain
zone; exact verdicts and Authentication-Results (parsed back with authres), cache hits
counted in BIND's query log."""
import ipaddress
import logging

import authres
import Milter
import pytest

from mx6milter.ctl.explain import explain, render_text
from mx6milter.dns import reverse_nibbles
from mx6milter.model import Message, Session, Tier

from dkimkeys import message
from harness import run_milter

AUTHSERV = "mx.example.org"
CONFIG = f"[policy]\nauthserv_id = {AUTHSERV}\n[dnswl]\nzones = list.dnswl.example\n"
FROM_NET = message(from_="Sender <sender@example.net>")
# what SPF, DKIM and DMARC say of every message below: example.net authorises none of 2001:db8:c::/48
AUTH = (f"{AUTHSERV}; spf=fail smtp.mailfrom=sender@example.net; dkim=none; "
        "dmarc=fail header.from=example.net policy.dmarc=reject")
ZONE = "list.dnswl.example"


def listed(ip: str) -> str:
    return f"dnswl=pass dns.zone={ZONE} policy.ip={ip}"


def error(ip: str, reason: str) -> str:
    return f'dnswl=permerror reason="{reason}" dns.zone={ZONE} policy.ip={ip}'


QUOTA, CODE, OUTSIDE = "query refused or over quota", "the list's error code", "outside 127.0.0.0/8"

CLIENTS = [
    # client            tier              status    finding                                    A-R (dnswl)
    ("2001:db8:c::10", Tier.NONE, "4.7.26", f"dnswl=low-trust({ZONE} 127.0.10.0 trust=none)",
     listed("127.0.10.0")),
    ("2001:db8:c::11", Tier.GREENLISTED, None, f"dnswl=pass({ZONE} 127.0.15.1 trust=low)",
     listed("127.0.15.1")),
    ("2001:db8:c::12", Tier.WHITELISTED, None, f"dnswl=pass({ZONE} 127.0.5.2 trust=medium)",
     listed("127.0.5.2") + ' policy.txt="example.net https://dnswl.example/s/?s=12"'),
    ("2001:db8:c::13", Tier.WHITELISTED, None, f"dnswl=pass({ZONE} 127.0.3.3 trust=high)",
     listed("127.0.3.3")),
    ("2001:db8:c::20", Tier.NONE, "4.7.26", f"dnswl=error({ZONE} 127.0.0.255: {QUOTA}; not evidence)",
     error("127.0.0.255", QUOTA)),
    ("2001:db8:c::21", Tier.NONE, "4.7.26",
     f"dnswl=error({ZONE} 127.255.255.254: {CODE}; not evidence)", error("127.255.255.254", CODE)),
    ("2001:db8:c::22", Tier.NONE, "4.7.26", f"dnswl=error({ZONE} 10.0.0.1: {OUTSIDE}; not evidence)",
     error("10.0.0.1", OUTSIDE)),
    # a trust-3 listing beside 127.0.0.255: the list has said nothing reliable
    ("2001:db8:c::23", Tier.NONE, "4.7.26", f"dnswl=error({ZONE} 127.0.0.255: {QUOTA}; not evidence)",
     error("127.0.0.255", QUOTA)),
    ("2001:db8:c::30", Tier.NONE, "4.7.26", f"dnswl=miss({ZONE})", None),
]


def evaluate(evaluator, client_ip, raw=FROM_NET):
    session = Session(client_ip=client_ip, helo="mail.example.net", mail_from="sender@example.net",
                      recipients=["user@example.org"])
    headers = tuple((name, value.strip()) for name, value in
                    (line.split(":", 1) for line in raw.decode().split("\r\n\r\n")[0].split("\r\n")))
    return evaluator.evaluate(session, Message(headers=headers, raw=raw))


def dnswl_checks(outcome):
    return [str(f) for f in outcome.evidence.checks if f.kind == "dnswl"]


@pytest.mark.parametrize("client,tier,status,finding,auth_results", CLIENTS)
def test_each_answer_gives_its_exact_verdict_and_authentication_results(
        evaluator_factory, client, tier, status, finding, auth_results):
    outcome = evaluate(evaluator_factory(CONFIG), client)
    assert outcome.decision.tier is tier
    assert dnswl_checks(outcome) == [finding]
    assert outcome.evidence.auth_results == AUTH + (f"; {auth_results}" if auth_results else "")
    parsed = authres.AuthenticationResultsHeader.parse_value(outcome.evidence.auth_results)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "fail"), ("dkim", "none"), ("dmarc", "fail")] + (
        [("dnswl", auth_results.split()[0].split("=")[1])] if auth_results else [])
    if auth_results:
        # authres 1.2 predates RFC 8904's "dns" ptype (dns.zone is compared as text above)
        ip, _, txt = auth_results.split("policy.ip=")[1].partition(" policy.txt=")
        assert [(p.type, p.name, p.value) for p in parsed.results[-1].properties] == \
            [("policy", "ip", ip)] + ([("policy", "txt", txt.strip('"'))] if txt else [])
    if status:
        assert outcome.decision.reply.status == status
        assert outcome.decision.reasons == ("not-authenticated",)
        assert outcome.evidence.failures == ()


def test_whitelisted_through_the_milter_with_both_headers(evaluator_factory):
    result = run_milter(evaluator_factory(CONFIG), FROM_NET, client_ip="2001:db8:c::12")
    assert result.rc == Milter.ACCEPT
    assert result.header("X-MX6-Verdict") == (
        f"whitelisted; evidence=dnswl=pass({ZONE} 127.0.5.2 trust=medium); mode=defensive; "
        f"by={AUTHSERV}")
    assert result.header("Authentication-Results") == (
        f'{AUTH}; {listed("127.0.5.2")} policy.txt="example.net https://dnswl.example/s/?s=12"')


def test_greenlisted_at_low_trust_through_the_milter(evaluator_factory):
    result = run_milter(evaluator_factory(CONFIG), FROM_NET, client_ip="2001:db8:c::11")
    assert result.rc == Milter.ACCEPT
    assert result.header("X-MX6-Verdict") == (
        f"greenlisted; subject-to-content-filtering; evidence=dnswl=pass({ZONE} 127.0.15.1 "
        f"trust=low); mode=defensive; by={AUTHSERV}")


def test_error_answer_falls_back_is_logged_counted_and_explained(evaluator_factory, caplog):
    evaluator = evaluator_factory(CONFIG)
    with caplog.at_level(logging.WARNING, logger="mx6milter"):
        result = run_milter(evaluator, FROM_NET, client_ip="2001:db8:c::20")
        again = run_milter(evaluator, FROM_NET, client_ip="2001:db8:c::20")
    assert result.rc == again.rc == Milter.TEMPFAIL
    assert result.reply[:2] == ("451", "4.7.26")
    assert f'{ZONE} policy.ip=127.0.0.255' in " ".join(result.reply)
    assert evaluator.dnswl.errors == {(ZONE, "127.0.0.255"): 2}
    warnings = [r.getMessage() for r in caplog.records if "dnswl zone" in r.getMessage()]
    assert warnings == [f"dnswl zone {ZONE} answered 127.0.0.255 ({QUOTA}): not a listing, never "
                        "evidence; 1 such answers since start"]     # the first; then every 100th
    session = Session(client_ip="2001:db8:c::20", helo="mail.example.net",
                      mail_from="sender@example.net", recipients=["user@example.org"])
    text = render_text(explain(evaluator, session, Message(
        headers=(("From", "Sender <sender@example.net>"),), raw=FROM_NET)))
    assert f"  dnswl         error           {ZONE} 127.0.0.255: {QUOTA}; not evidence" in text
    assert ("  status        4.7.26 (neither SPF nor DKIM passed; "
            "[policy] defensive_status_unauthenticated)") in text


def test_answers_are_cached_for_their_ttl(evaluator_factory, dns_server):
    evaluator = evaluator_factory(CONFIG)           # a new resolver: an empty cache
    name = f"{reverse_nibbles(ipaddress.IPv6Address('2001:db8:c::12'))}.{ZONE}"
    before = dns_server.queries()
    first = evaluate(evaluator, "2001:db8:c::12")
    middle = dns_server.queries()
    second = evaluate(evaluator, "2001:db8:c::12")
    after = dns_server.queries()
    assert first.decision.tier is second.decision.tier is Tier.WHITELISTED
    assert first.evidence.auth_results == second.evidence.auth_results
    asked = [q for q in middle[len(before):] if q[0] == name]
    assert sorted(asked) == [(name, "A"), (name, "TXT")]          # the listing, then its text
    assert [q for q in after[len(middle):] if q[0] == name] == []   # the second: from the cache
    assert after[len(middle):] == []          # nothing at all: SPF, DKIM, DMARC, PTR cached too


def test_a_zone_that_fails_is_temperror_never_a_listing(evaluator_factory):
    # BIND serves no refused.invalid and does not recurse: REFUSED, as from a dead list
    config = CONFIG.replace(f"zones = {ZONE}", f"zones = {ZONE} refused.invalid")
    evaluator = evaluator_factory(config)
    unlisted = evaluate(evaluator, "2001:db8:c::30")
    assert unlisted.decision.tier is Tier.NONE
    assert unlisted.evidence.failures == ("dns-unavailable",)
    assert unlisted.decision.reply.status == "4.4.3"
    assert dnswl_checks(unlisted)[1].startswith("dnswl=temperror(refused.invalid ")
    tail = unlisted.evidence.auth_results.split("dmarc=fail header.from=example.net "
                                                "policy.dmarc=reject; ")[1]
    assert tail.startswith('dnswl=temperror reason="')
    assert tail.endswith('" dns.zone=refused.invalid')
    # a listing in the other zone still whitelists; the failure is recorded
    listed_too = evaluate(evaluator, "2001:db8:c::13")
    assert listed_too.decision.tier is Tier.WHITELISTED
    assert "failures=dns-unavailable" in listed_too.decision.header


def test_domain_zone_for_a_dkim_domain(evaluator_factory, dkim_keys):
    evaluator = evaluator_factory(CONFIG + "domain_zones = dwl.dnswl.example\n")
    raw = dkim_keys.sign(FROM_NET, "example.net", "rsa")
    result = run_milter(evaluator, raw, client_ip="2001:db8:c::30")
    assert result.rc == Milter.ACCEPT
    assert result.header("X-MX6-Verdict") == (
        "whitelisted; evidence=dnswl=pass(dwl.dnswl.example d=example.net 127.0.9.3 trust=high); "
        f"mode=defensive; by={AUTHSERV}")
    value = result.header("Authentication-Results")
    assert value.endswith("dmarc=pass header.from=example.net policy.dmarc=reject; "
                          "dnswl=pass (d=example.net) dns.zone=dwl.dnswl.example policy.ip=127.0.9.3")
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    assert [(r.method, r.result) for r in parsed.results][-1] == ("dnswl", "pass")
    # an unsigned message from the same client: no domain to look up, falls back
    assert run_milter(evaluator, FROM_NET, client_ip="2001:db8:c::30").rc == Milter.TEMPFAIL


@pytest.mark.parametrize("trust,tier", [("whitelist_trust = 3", Tier.GREENLISTED),
                                        ("whitelist_trust = 4\ngreenlist_trust = 4", Tier.NONE),
                                        ("whitelist_trust = 0", Tier.WHITELISTED)])
def test_trust_thresholds(evaluator_factory, trust, tier):
    assert evaluate(evaluator_factory(CONFIG + trust + "\n"), "2001:db8:c::12").decision.tier is tier


def test_a_dns_whitelist_still_vouches_while_redis_is_down(evaluator_factory, redis_server):
    evaluator = evaluator_factory(CONFIG)
    redis_server.stop()
    try:
        listed_client = run_milter(evaluator, FROM_NET, client_ip="2001:db8:c::13")
        unlisted = run_milter(evaluator, FROM_NET, client_ip="2001:db8:c::30")
    finally:
        redis_server.start()
    assert listed_client.rc == Milter.ACCEPT
    assert listed_client.header("X-MX6-Verdict").startswith(
        f"whitelisted; evidence=dnswl=pass({ZONE} 127.0.3.3 trust=high); failures=redis-unavailable;")
    assert unlisted.rc == Milter.TEMPFAIL and unlisted.reply[:2] == ("451", "4.3.0")
