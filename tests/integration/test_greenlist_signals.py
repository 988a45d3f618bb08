"""Each greenlist signal, hit and miss, against the real BIND and the real Redis.

Zones: tests/data/zones/greenlist.example.zone and the reverse zone
8.b.d.0.1.0.0.2.ip6.arpa.zone (PTRs in 2001:db8:8::/48 only).
"""
import ipaddress
import socket
import time

import Milter
import pytest

from mx6milter.dns import Resolver
from mx6milter.evidence.greenlist import check_fcrdns
from mx6milter.model import Message, Session, Tier
from mx6milter.prefixes import ip_field

from harness import run_milter

FROM_GREEN = (b"From: Sender <sender@greenlist.example>\r\nTo: user@example.org\r\n"
              b"Subject: hello\r\nMessage-ID: <g1@greenlist.example>\r\n\r\nHello.\r\n")


def evaluate(evaluator, client_ip, helo="mail.greenlist.example",
             mail_from="sender@greenlist.example", raw=FROM_GREEN):
    headers = tuple((name, value.strip()) for name, value in
                    (line.split(":", 1) for line in raw.decode().split("\r\n\r\n")[0].split("\r\n")))
    session = Session(client_ip=client_ip, helo=helo, mail_from=mail_from,
                      recipients=["user@example.org"])
    return evaluator.evaluate(session, Message(headers=headers, raw=raw))


def finding(outcome, kind):
    found = [f for f in outcome.evidence.checks if f.kind == kind]
    assert len(found) == 1, (kind, outcome.evidence.checks)
    return found[0]


def net(text):
    return ip_field(ipaddress.IPv6Network(text))


# --- forward-confirmed reverse DNS -------------------------------------------------------


def test_fcrdns_hit_greenlists_through_the_milter(evaluator_factory):
    result = run_milter(evaluator_factory(), FROM_GREEN, client_ip="2001:db8:8::10",
                        helo="mail.greenlist.example", mail_from="sender@greenlist.example")
    assert result.rc == Milter.ACCEPT
    assert result.header("X-MX6-Verdict").startswith(
        "greenlisted; subject-to-content-filtering; evidence=fcrdns=pass(mail.greenlist.example);")


def test_fcrdns_helo_compared_without_case_or_trailing_dot(evaluator_factory):
    outcome = evaluate(evaluator_factory(), "2001:db8:8::10", helo="Mail.Greenlist.Example.")
    assert outcome.decision.tier is Tier.GREENLISTED


def test_fcrdns_helo_mismatch(evaluator_factory):
    outcome = evaluate(evaluator_factory(), "2001:db8:8::10", helo="other.greenlist.example")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "fcrdns")) == \
        "fcrdns=helo-mismatch(ptr=mail.greenlist.example helo=other.greenlist.example)"


def test_ptr_resolving_to_a_different_address(evaluator_factory):
    outcome = evaluate(evaluator_factory(), "2001:db8:8::11", helo="liar.greenlist.example")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "fcrdns")) == \
        "fcrdns=fail(ptr=liar.greenlist.example does not resolve to the client)"


def test_no_ptr_is_a_miss(evaluator_factory):
    outcome = evaluate(evaluator_factory(), "2001:db8:8::50")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "fcrdns")) == "fcrdns=miss(no PTR)"


def test_several_ptrs_one_of_them_confirmed(evaluator_factory):
    outcome = evaluate(evaluator_factory(), "2001:db8:8::12", helo="mx2.greenlist.example")
    assert outcome.decision.tier is Tier.GREENLISTED
    assert outcome.evidence.greenlist[0].detail == "mx2.greenlist.example"


def test_fcrdns_switched_off(evaluator_factory):
    outcome = evaluate(evaluator_factory("[greenlist]\nfcrdns = no\nmishandle4xx = no\n"),
                       "2001:db8:8::10")
    assert outcome.decision.tier is Tier.NONE
    assert not [f for f in outcome.evidence.checks if f.kind == "fcrdns"]


@pytest.fixture
def silent_nameserver():
    """A UDP socket that takes DNS queries and never answers: a dead server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_ptr_timeout_is_a_temperror(silent_nameserver):
    host, port = silent_nameserver.split(":")
    resolver = Resolver(((host, int(port)),), timeout=0.5)
    started = time.monotonic()
    found, names = check_fcrdns(resolver.budget(3), ipaddress.ip_address("2001:db8:8::10"),
                                "mail.greenlist.example")
    assert time.monotonic() - started < 2
    assert (found.kind, found.result, names) == ("fcrdns", "temperror", ())
    assert "timed out" in found.detail


def test_ptr_timeout_in_a_whole_decision_falls_back(evaluator_factory, silent_nameserver):
    evaluator = evaluator_factory(nameservers=silent_nameserver)
    evaluator.store.add("green", "local", [("", net("2001:db8:77::/48"), "0")])
    outcome = evaluate(evaluator, "2001:db8:8::10")
    assert finding(outcome, "fcrdns").result == "temperror"
    assert outcome.decision.tier is Tier.NONE
    # Redis signals still count when DNS is dead
    outcome = evaluate(evaluator, "2001:db8:77::1")
    assert outcome.decision.tier is Tier.GREENLISTED
    assert [str(f) for f in outcome.evidence.greenlist] == ["network=pass(2001:db8:77::/48 source=local)"]


# --- greenlisted networks ------------------------------------------------------------------


def test_greenlisted_network_hit_and_miss(evaluator_factory):
    evaluator = evaluator_factory("[greenlist]\nfcrdns = no\n")
    evaluator.store.add("green", "local", [("", net("2001:db8:77::/48"), "0")])
    evaluator.store.add("green", "feed", [("", net("2001:db8:77:1::/64"), "0")])
    outcome = evaluate(evaluator, "2001:db8:77:1::9")
    assert outcome.decision.tier is Tier.GREENLISTED
    assert str(outcome.evidence.greenlist[0]) == "network=pass(2001:db8:77:1::/64 source=feed)"
    outcome = evaluate(evaluator, "2001:db8:78::9")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "network")) == "network=miss"


def test_expired_greenlisted_network_does_not_count(evaluator_factory):
    evaluator = evaluator_factory("[greenlist]\nfcrdns = no\n")
    evaluator.store.add("green", "local", [("", net("2001:db8:77::/48"), "1000")])
    assert evaluate(evaluator, "2001:db8:77::9").decision.tier is Tier.NONE


# --- ASN -----------------------------------------------------------------------------------


def load_asn_table(store):
    store.add("asn", "pfx2as", [("", net("2001:db8:70::/44"), "64500 0"),
                                ("", net("2001:db8:7f::/48"), "64501 0"),
                                ("", net("2001:db8:7e::/48"), "64500,64502 0")])


def test_asn_on_the_greenlist(evaluator_factory):
    evaluator = evaluator_factory()
    load_asn_table(evaluator.store)
    evaluator.store.add("asnlist", "local", [("", "64500", "0")])
    outcome = evaluate(evaluator, "2001:db8:71::1")
    assert outcome.decision.tier is Tier.GREENLISTED
    assert [str(f) for f in outcome.evidence.greenlist] == ["asn=pass(AS64500 2001:db8:70::/44)"]


def test_asn_longest_prefix_wins(evaluator_factory):
    # 2001:db8:7f::/48 sits inside AS64500's /44 but is announced by AS64501
    evaluator = evaluator_factory()
    load_asn_table(evaluator.store)
    evaluator.store.add("asnlist", "local", [("", "64500", "0")])
    outcome = evaluate(evaluator, "2001:db8:7f::1")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "asn")) == "asn=unlisted(AS64501 2001:db8:7f::/48)"


def test_asn_every_origin_must_be_listed(evaluator_factory):
    evaluator = evaluator_factory()
    load_asn_table(evaluator.store)
    evaluator.store.add("asnlist", "local", [("", "64500", "0")])
    outcome = evaluate(evaluator, "2001:db8:7e::1")
    assert str(finding(outcome, "asn")) == "asn=unlisted(AS64500+AS64502 2001:db8:7e::/48)"
    evaluator.store.add("asnlist", "partner", [("", "64502", "0")])
    assert evaluate(evaluator, "2001:db8:7e::1").decision.tier is Tier.GREENLISTED


def test_asn_not_in_the_table(evaluator_factory):
    evaluator = evaluator_factory()
    load_asn_table(evaluator.store)
    evaluator.store.add("asnlist", "local", [("", "64500", "0")])
    outcome = evaluate(evaluator, "2001:db8:99::1")
    assert str(finding(outcome, "asn")) == "asn=miss(no ASN for the client)"


def test_asn_expired_listing_does_not_count(evaluator_factory):
    evaluator = evaluator_factory()
    load_asn_table(evaluator.store)
    evaluator.store.add("asnlist", "local", [("", "64500", "1000")])
    assert finding(evaluate(evaluator, "2001:db8:71::1"), "asn").result == "unlisted"


# --- senders that mishandle 4xx --------------------------------------------------------------


def test_mishandle4xx_by_network(evaluator_factory):
    evaluator = evaluator_factory("[greenlist]\nfcrdns = no\n")
    evaluator.store.add("mishandle4xx", "local", [("", net("2001:db8:55::/48"), "0")])
    outcome = evaluate(evaluator, "2001:db8:55::7")
    assert [str(f) for f in outcome.evidence.greenlist] == \
        ["mishandle4xx=pass(2001:db8:55::/48 source=local)"]
    assert evaluate(evaluator, "2001:db8:56::7").decision.tier is Tier.NONE


def test_mishandle4xx_by_forward_confirmed_ptr_domain(evaluator_factory):
    evaluator = evaluator_factory("[greenlist]\nfcrdns = no\n")
    evaluator.store.add("mishandle4xx", "greylist", [("", "bulk.greenlist.example", "0")])
    outcome = evaluate(evaluator, "2001:db8:8::13", helo="whatever.invalid")
    assert [str(f) for f in outcome.evidence.greenlist] == \
        ["mishandle4xx=pass(ptr=mta1.bulk.greenlist.example domain=bulk.greenlist.example source=greylist)"]


def test_mishandle4xx_ptr_domain_needs_forward_confirmation(evaluator_factory):
    # 2001:db8:8::14 claims fake.bulk.greenlist.example, which resolves elsewhere
    evaluator = evaluator_factory("[greenlist]\nfcrdns = no\n")
    evaluator.store.add("mishandle4xx", "greylist", [("", "bulk.greenlist.example", "0")])
    outcome = evaluate(evaluator, "2001:db8:8::14")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "mishandle4xx")) == "mishandle4xx=miss"


# --- the rule and the precedence -------------------------------------------------------------


def test_min_signals_two_needs_two_kinds(evaluator_factory):
    evaluator = evaluator_factory("[greenlist]\nmin_signals = 2\n")
    outcome = evaluate(evaluator, "2001:db8:8::10")
    assert outcome.decision.tier is Tier.NONE
    assert str(finding(outcome, "greenlist")) == "greenlist=insufficient(1/2 signals)"
    evaluator.store.add("green", "local", [("", net("2001:db8:8::/48"), "0")])
    outcome = evaluate(evaluator, "2001:db8:8::10")
    assert outcome.decision.tier is Tier.GREENLISTED
    assert outcome.decision.header.startswith(
        "greenlisted; subject-to-content-filtering; evidence=fcrdns=pass(mail.greenlist.example),"
        "network=pass(2001:db8:8::/48 source=local);")


def test_whitelisted_beats_greenlisted(evaluator_factory):
    evaluator = evaluator_factory()
    evaluator.store.add("ip", "local", [("", net("2001:db8:8::10/128"), "0")])
    outcome = evaluate(evaluator, "2001:db8:8::10")
    assert outcome.decision.tier is Tier.WHITELISTED
    assert finding(outcome, "fcrdns").result == "pass"      # gathered, logged, outranked
    assert outcome.decision.header.startswith("whitelisted; evidence=ip=pass(")


def test_every_signal_in_one_redis_round_trip(evaluator_factory, redis_server):
    evaluator = evaluator_factory("[greenlist]\nhistory = yes\n")
    store = evaluator.store
    load_asn_table(store)
    store.add("asnlist", "local", [("", "64500", "0")])
    store.add("green", "local", [("", net("2001:db8:9::/48"), "0")])
    store.add("mishandle4xx", "local", [("", "greenlist.example", "0")])
    evaluator.greenlist.history.record("greenlist.example")
    evaluate(evaluator, "2001:db8:8::10")       # warm: scripts loaded, connection open

    real = store.client
    round_trips = []

    class Counting:
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name == "pipeline":
                def pipeline(*args, **kwargs):
                    pipe = attr(*args, **kwargs)
                    execute = pipe.execute
                    pipe.execute = lambda *a, **k: (round_trips.append("pipeline"), execute(*a, **k))[1]
                    return pipe
                return pipeline
            if callable(attr):
                return lambda *a, **k: (round_trips.append(name), attr(*a, **k))[1]
            return attr

    admin = redis_server.client()
    admin.config_resetstat()
    store.client = Counting()
    try:
        outcome = evaluate(evaluator, "2001:db8:8::10")
    finally:
        store.client = real
    stats = admin.info("commandstats")
    assert round_trips == ["execute_command"]           # one command: one round trip
    # one script for every kind: ip, domain, ab, green, asn, mishandle4xx, history
    assert stats["cmdstat_evalsha"]["calls"] == 1
    passed = {f.kind for f in outcome.evidence.greenlist}
    assert passed == {"fcrdns", "mishandle4xx"}        # the rest miss for this client
    assert {f.kind for f in outcome.evidence.checks} >= {"network", "asn", "history"}


# --- where the signals show: log line, mx6ctl explain; Redis down ------------------------------


def test_signals_in_the_log_line(evaluator_factory):
    from mx6milter.logs import format_decision_log
    session = Session(client_ip="2001:db8:8::10", helo="mail.greenlist.example",
                      mail_from="sender@greenlist.example", recipients=["user@example.org"])
    outcome = evaluate(evaluator_factory(), "2001:db8:8::10")
    line = format_decision_log(session, outcome)
    assert "fcrdns=pass(mail.greenlist.example)" in line
    assert ",network=miss," in line and ",asn=miss(no ASN for the client)," in line
    assert ' verdict=greenlisted action=accept reasons="fcrdns=pass(mail.greenlist.example)" ' in line


def test_signals_in_mx6ctl_explain(tmp_path, redis_url, dns_server):
    import json
    from ctl_runner import Ctl
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers)
    message = ctl.file("m.eml", FROM_GREEN)
    run = ctl("explain", "--client-ip", "2001:db8:8::11", "--helo", "liar.greenlist.example",
              "--mail-from", "sender@greenlist.example", "--rcpt", "user@example.org",
              "--json", message)
    result = json.loads(run.out)
    assert result["tier"] == "none"
    assert {"kind": "fcrdns", "result": "fail",
            "detail": "ptr=liar.greenlist.example does not resolve to the client"} in result["checks"]
    run = ctl("explain", "--client-ip", "2001:db8:8::10", "--helo", "mail.greenlist.example",
              "--mail-from", "sender@greenlist.example", "--rcpt", "user@example.org", message)
    assert run.rc == 0, run.err
    assert "X-MX6-Verdict: greenlisted; subject-to-content-filtering; " \
           "evidence=fcrdns=pass(mail.greenlist.example)" in run.out


def test_redis_down_fcrdns_still_counts(dns_server):
    from conftest import make_config
    from mx6milter.evaluate import Evaluator
    from mx6milter.store import Store
    config = make_config("", "redis://127.0.0.1:1/0", dns_server.nameservers)
    evaluator = Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))
    outcome = evaluate(evaluator, "2001:db8:8::10")
    assert "redis-unavailable" in outcome.evidence.failures
    assert outcome.decision.tier is Tier.GREENLISTED
    assert not [f for f in outcome.evidence.checks if f.kind in ("network", "asn", "mishandle4xx")]
