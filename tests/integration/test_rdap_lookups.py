"""Registrar and RDAP signals against a real HTTP server serving RDAP answers shaped
like real registries' and RIRs' (tests/data/rdap), reached through bootstrap files
that point at it; real BIND and Redis. No decision waits for RDAP.

greenlist.example publishes SPF for 2001:db8:8::/48 and DMARC p=none; example.com
for 2001:db8:10::/48.
"""
import time
from pathlib import Path

import Milter
import pytest

from mx6milter.model import Message, Session, Tier
from mx6milter.store import Store

from conftest import make_config
from ctl_runner import Ctl
from harness import run_milter
from rdapserver import RdapServer

DATA = Path(__file__).resolve().parents[1] / "data" / "rdap"
CLIENT = "2001:db8:8::50"


def message(domain="greenlist.example"):
    return (f"From: Sender <sender@{domain}>\r\nTo: user@example.org\r\nSubject: rdap\r\n"
            f"Message-ID: <rdap@{domain}>\r\n\r\nHello.\r\n").encode()


@pytest.fixture
def rdap_server():
    with RdapServer() as server:
        server.route("/domain/greenlist.example", (DATA / "gtld-domain.json").read_bytes())
        server.route(f"/ip/{CLIENT}", (DATA / "rir-network.json").read_bytes())
        server.route("/domain/example.com", (DATA / "cctld-domain.json").read_bytes())
        yield server


@pytest.fixture
def rdap_config(rdap_server, tmp_path):
    dns, ipv6 = rdap_server.write_bootstrap(tmp_path, tlds=("example", "com"))
    return ("[greenlist]\nfcrdns = no\nregistrar = yes\nrdap = yes\nrdap_min_age = 90d\n"
            f"[rdap]\nenabled = yes\nbootstrap = {dns}\nip_bootstrap = {ipv6}\ntimeout = 5\n"
            "min_interval = 0.01\n")


def decide(evaluator, domain="greenlist.example", client_ip=CLIENT):
    session = Session(client_ip=client_ip, helo="mail.example.invalid",
                      mail_from=f"sender@{domain}", recipients=["user@example.org"])
    raw = message(domain)
    return evaluator.evaluate(session, Message(headers=(("From", f"Sender <sender@{domain}>"),),
                                               raw=raw))


def checks(outcome, *kinds):
    return [str(f) for f in outcome.evidence.checks if f.kind in kinds]


def test_first_message_falls_back_and_queues_the_retry_is_greenlisted(evaluator_factory,
                                                                      rdap_config, rdap_server):
    evaluator = evaluator_factory(rdap_config)
    evaluator.store.load("registrar", "local", [("", "292", "0")])
    first = run_milter(evaluator, message(), client_ip=CLIENT, helo="mail.example.invalid",
                       mail_from="sender@greenlist.example")
    assert first.rc == Milter.TEMPFAIL
    fetcher = evaluator.greenlist.rdap.fetcher
    assert fetcher.flush(20)
    assert rdap_server.requests == {"/domain/greenlist.example": 1, f"/ip/{CLIENT}": 1}
    cached = evaluator.store.client.get("mx6:v1:rdap:domain:greenlist.example")
    assert cached.startswith("292 1050506921 public ")
    assert 7 * 86400 - 5 <= evaluator.store.client.ttl("mx6:v1:rdap:domain:greenlist.example") \
        <= 7 * 86400
    assert evaluator.store.client.get("mx6:v1:rdap:ip:20010db80008/48").startswith("yes ")
    retry = run_milter(evaluator, message(), client_ip=CLIENT, helo="mail.example.invalid",
                       mail_from="sender@greenlist.example")
    assert retry.rc == Milter.ACCEPT
    header = retry.header("X-MX6-Verdict")
    assert header.startswith("greenlisted; subject-to-content-filtering; evidence="
                             "registrar=pass(greenlist.example iana=292 source=local),"
                             "rdap=pass(greenlist.example age=")
    assert "registrant=public network=2001:db8:8::/48 abuse=yes)" in header
    assert rdap_server.requests == {"/domain/greenlist.example": 1, f"/ip/{CLIENT}": 1}


def test_first_decision_says_pending_and_unlisted_registrar_does_not_count(evaluator_factory,
                                                                          rdap_config):
    evaluator = evaluator_factory(rdap_config.replace("rdap = yes", "rdap = no"))
    first = decide(evaluator)
    assert checks(first, "registrar", "rdap") == \
        ["registrar=pending(greenlist.example lookup queued)"]
    assert evaluator.greenlist.rdap.fetcher.flush(20)
    second = decide(evaluator)
    assert checks(second, "registrar") == ["registrar=unlisted(greenlist.example iana=292)"]
    assert second.decision.tier is Tier.NONE


def test_cctld_with_a_redacted_registrant_fails_rdap(evaluator_factory, rdap_config):
    evaluator = evaluator_factory(rdap_config.replace("rdap_min_age = 90d", "rdap_min_age = 1d"))
    decide(evaluator, "example.com", "2001:db8:10::5")
    assert evaluator.greenlist.rdap.fetcher.flush(20)
    outcome = decide(evaluator, "example.com", "2001:db8:10::5")
    assert checks(outcome, "registrar", "rdap") == [
        "registrar=unknown(example.com no IANA Registrar ID)",
        "rdap=fail(example.com registrant=redacted)"]
    assert outcome.decision.tier is Tier.NONE


def test_unauthenticated_from_domain_looks_nothing_up(evaluator_factory, rdap_config, rdap_server):
    evaluator = evaluator_factory(rdap_config)
    outcome = decide(evaluator, client_ip="2001:db8:99::1")        # outside the SPF: no pass
    assert checks(outcome, "registrar", "rdap") == [
        "registrar=skipped(From domain not authenticated)",
        "rdap=skipped(From domain not authenticated)"]
    assert evaluator.greenlist.rdap.fetcher.flush(5)
    assert rdap_server.requests == {}


def test_a_slow_server_never_delays_a_decision(evaluator_factory, rdap_config, rdap_server):
    rdap_server.route("/domain/greenlist.example", b"{}", hold=True)
    evaluator = evaluator_factory(rdap_config)
    decide(evaluator)                          # queues the lookup, which the server holds
    assert rdap_server.arrived.wait(20)
    started = time.monotonic()
    outcome = decide(evaluator)                # decided while the server still holds it
    elapsed = time.monotonic() - started
    assert not rdap_server.release.is_set()
    assert checks(outcome, "registrar") == ["registrar=pending(greenlist.example lookup queued)"]
    rdap_server.release.set()
    assert evaluator.greenlist.rdap.fetcher.flush(20)
    print(f"decision while the RDAP server held a lookup: {elapsed * 1000:.1f} ms")


def test_a_failing_server_caches_nothing_and_is_not_asked_again_at_once(evaluator_factory,
                                                                       rdap_config, rdap_server):
    rdap_server.route("/domain/greenlist.example", b"oops", status=500)
    rdap_server.route(f"/ip/{CLIENT}", b"not json at all")
    evaluator = evaluator_factory(rdap_config)
    assert decide(evaluator).decision.tier is Tier.NONE
    fetcher = evaluator.greenlist.rdap.fetcher
    assert fetcher.flush(20)
    assert fetcher.failed == 2 and fetcher.fetched == 0
    assert evaluator.store.client.keys("mx6:v1:rdap:*") == []
    decide(evaluator)
    assert fetcher.flush(20)
    assert rdap_server.requests == {"/domain/greenlist.example": 1, f"/ip/{CLIENT}": 1}


def test_an_answer_over_the_size_cap_is_refused(evaluator_factory, rdap_config, rdap_server):
    rdap_server.route("/domain/greenlist.example", b'{"x": "' + b"a" * 300_000 + b'"}')
    evaluator = evaluator_factory(rdap_config)
    decide(evaluator)
    fetcher = evaluator.greenlist.rdap.fetcher
    assert fetcher.flush(20)
    assert evaluator.store.client.get("mx6:v1:rdap:domain:greenlist.example") is None
    assert fetcher.failed == 1


def test_429_backs_the_server_off_for_its_retry_after(evaluator_factory, rdap_config, rdap_server):
    rdap_server.route("/domain/greenlist.example", b"", status=429, headers={"Retry-After": "120"})
    evaluator = evaluator_factory(rdap_config.replace("rdap = yes", "rdap = no"))
    decide(evaluator)
    fetcher = evaluator.greenlist.rdap.fetcher
    assert fetcher.flush(20)
    server = f"127.0.0.1:{rdap_server.port}"
    assert 110 < fetcher._backoff[server] - time.monotonic() <= 120
    assert fetcher.want("domain", "greenlist.example") is False       # remembered as failed
    assert fetcher.want("domain", "other.example") is True            # same server: deferred
    assert fetcher.flush(20)
    assert fetcher.deferred == 1
    assert rdap_server.requests == {"/domain/greenlist.example": 1}


def test_unknown_domain_is_cached_as_notfound(evaluator_factory, rdap_config, rdap_server):
    evaluator = evaluator_factory(rdap_config.replace("rdap = yes", "rdap = no"))
    fetcher = evaluator.greenlist.rdap.fetcher
    fetcher.want("domain", "nosuch.example")          # the server answers 404
    fetcher.want("domain", "example.org")             # no server in the bootstrap
    assert fetcher.flush(20)
    assert evaluator.store.client.get("mx6:v1:rdap:domain:nosuch.example").startswith("- - notfound ")
    assert evaluator.store.client.ttl("mx6:v1:rdap:domain:example.org") > 86400 - 5
    assert rdap_server.requests == {"/domain/nosuch.example": 1}


def test_explain_and_mx6ctl_registrar(tmp_path, redis_url, dns_server, rdap_config):
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers, extra=rdap_config)
    assert ctl("registrar", "add", "292", "IANA:1068").rc == 0
    listed = ctl("registrar", "list").out.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["iana=1068", "iana=292"]
    assert ctl("registrar", "add", "zero").rc == 2
    mail = ctl.file("m.eml", message().decode())
    run = ctl("explain", "--client-ip", CLIENT, "--helo", "mail.example.invalid",
              "--mail-from", "sender@greenlist.example", "--rcpt", "user@example.org", mail)
    assert "registrar     pending         greenlist.example lookup queued" in run.out
    assert "rdap          pending         greenlist.example domain and network lookup queued" \
        in run.out
    assert ctl("registrar", "remove", "292").rc == 0
    assert ctl("registrar", "list").out.count("\n") == 1


def test_redis_failing_under_the_fetcher_pauses_it_and_forgets_nothing_it_must_redo(
        evaluator_factory, rdap_config, rdap_server, caplog):
    evaluator = evaluator_factory(rdap_config)
    fetcher = evaluator.greenlist.rdap.fetcher
    # Redis gone between the decision's lookup and the fetcher's write: the decision reads
    # through the evaluator's store, the fetcher writes through a dead one.
    fetcher.store = Store.from_config(make_config("", "redis://127.0.0.1:1/0", "127.0.0.1").redis)
    fetcher.monotonic = lambda: 1000.0      # frozen: the pause covers every item after the first
    decide(evaluator)                       # queues the domain and the network lookups
    assert fetcher.flush(20)
    assert (fetcher.failed, fetcher.fetched) == (2, 0)
    assert len(rdap_server.requests) == 1   # the second was skipped by the pause, not fetched
    lines = [r.getMessage() for r in caplog.records if r.name == "mx6milter.evidence.rdap_fetch"]
    assert len(lines) == 1 and lines[0].startswith("RDAP: Redis: ")
    assert lines[0].endswith("(1 lookups not cached so far)")

    fetcher.store, fetcher.monotonic = evaluator.store, time.monotonic    # Redis is back
    decide(evaluator)                       # nothing was left marked pending: queued again
    assert fetcher.flush(20)
    assert fetcher.fetched == 2
    assert evaluator.store.client.get("mx6:v1:rdap:domain:greenlist.example") is not None
