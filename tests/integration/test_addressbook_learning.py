"""Addressbooks learnt from outbound mail, through the milter, real Redis and BIND.

Outbound: SMTP AUTH ({auth_authen}) or a client in trusted_networks. The reply
comes over IPv6 from greenlist.example (SPF 2001:db8:8::/48, DMARC p=none).
"""
import time

import Milter

from mx6milter.store import Store

from conftest import make_config
from harness import run_milter

LEARN = ("[addressbook]\nlearn = yes\nlearn_expiry = 30d\n"
         "[greenlist]\nfcrdns = no\n[policy]\ntrusted_networks = 192.0.2.0/24\n")
AUTH = {"{auth_authen}": "alice"}


def outbound(evaluator, rcpts, mail_from="alice@example.org", macros=AUTH, client_ip="198.51.100.7"):
    raw = (f"From: <{mail_from}>\r\nTo: {rcpts[0]}\r\nSubject: hi\r\n\r\nHello.\r\n").encode()
    result = run_milter(evaluator, raw, client_ip=client_ip, helo="laptop",
                        mail_from=mail_from, rcpts=rcpts, macros=macros)
    assert result.rc == Milter.ACCEPT and result.added == []    # outbound mail untouched
    assert evaluator.learner.flush(10)
    return result


def reply(evaluator, rcpt="alice@example.org", sender="friend@greenlist.example",
          client_ip="2001:db8:8::50"):
    raw = (f"From: Friend <{sender}>\r\nTo: {rcpt}\r\nSubject: re: hi\r\n"
           f"Message-ID: <r@greenlist.example>\r\n\r\nThanks.\r\n").encode()
    return run_milter(evaluator, raw, client_ip=client_ip, helo="mail.greenlist.example",
                      mail_from=sender, rcpts=(rcpt,))


def learnt(store, user):
    return {hit.field: hit.value for hit in store.entries("ab", "learned", user)}


def test_authenticated_outbound_teaches_and_the_reply_is_whitelisted(evaluator_factory):
    evaluator = evaluator_factory(LEARN)
    before = reply(evaluator)
    assert before.rc == Milter.TEMPFAIL
    started = time.time()
    outbound(evaluator, ["Friend@greenlist.example", "other@partner.example"])
    entries = learnt(evaluator.store, "alice@example.org")
    assert sorted(entries) == ["friend@greenlist.example", "other@partner.example"]
    expires = int(entries["friend@greenlist.example"])
    assert started + 30 * 86400 - 5 <= expires <= time.time() + 30 * 86400
    ttl = evaluator.store.client.ttl("mx6:v1:ab:learned:alice@example.org")
    assert 30 * 86400 - 5 <= ttl <= 30 * 86400
    after = reply(evaluator)
    assert after.rc == Milter.ACCEPT
    assert after.header("X-MX6-Verdict").startswith(
        "whitelisted; evidence=addressbook=pass(1 recipients via=spf)")


def test_trusted_network_teaches_too(evaluator_factory):
    evaluator = evaluator_factory(LEARN)
    outbound(evaluator, ["friend@greenlist.example"], macros={}, client_ip="192.0.2.25")
    assert list(learnt(evaluator.store, "alice@example.org")) == ["friend@greenlist.example"]


def test_inbound_and_unauthenticated_mail_teaches_nothing(evaluator_factory):
    evaluator = evaluator_factory(LEARN)
    run_milter(evaluator, b"From: <alice@example.org>\r\n\r\nx\r\n", client_ip="198.51.100.7",
               mail_from="alice@example.org", rcpts=("friend@greenlist.example",))
    reply(evaluator, rcpt="friend@greenlist.example", sender="alice@example.org")
    assert evaluator.learner.flush(10)
    assert evaluator.store.sources("ab") == set()


def test_an_unauthenticated_reply_from_a_learnt_correspondent_still_falls_back(evaluator_factory):
    evaluator = evaluator_factory(LEARN)
    outbound(evaluator, ["friend@greenlist.example"])
    forged = reply(evaluator, client_ip="2001:db8:99::1")     # outside greenlist.example's SPF
    assert forged.rc == Milter.TEMPFAIL


def test_a_blast_teaches_nothing(evaluator_factory):
    evaluator = evaluator_factory(LEARN)
    outbound(evaluator, [f"r{n}@greenlist.example" for n in range(51)])
    assert evaluator.store.sources("ab") == set()
    assert evaluator.learner.learnt == 0


def test_the_cap_evicts_the_correspondent_written_to_least_recently(evaluator_factory):
    evaluator = evaluator_factory(LEARN.replace("learn = yes\n", "learn = yes\nlearn_max_entries = 3\n"))
    clock = [1_800_000_000]
    evaluator.learner.clock = lambda: clock[0]
    for name in ("a", "b", "c"):
        outbound(evaluator, [f"{name}@greenlist.example"])
        clock[0] += 60
    outbound(evaluator, ["a@greenlist.example"])          # a refreshed: b is now the oldest
    clock[0] += 60
    outbound(evaluator, ["d@greenlist.example"])
    assert sorted(learnt(evaluator.store, "alice@example.org")) == \
        ["a@greenlist.example", "c@greenlist.example", "d@greenlist.example"]
    assert evaluator.learner.evicted == 1


def test_privacy_mode_learns_keyed_hashes(evaluator_factory, redis_url):
    evaluator = evaluator_factory(LEARN)
    evaluator.store = evaluator.learner.store = Store.from_config(
        evaluator.config.redis, addressbook_secret=b"0123456789abcdef-secret")
    outbound(evaluator, ["friend@greenlist.example"])
    keys = evaluator.store.client.keys("mx6:v1:ab:learned:*")
    assert len(keys) == 1 and "alice" not in keys[0]
    assert all("friend" not in field for field in learnt(evaluator.store, keys[0].rsplit(":", 1)[1]))
    assert reply(evaluator).rc == Milter.ACCEPT


def test_redis_down_never_delays_or_fails_the_outbound_message(dns_server, caplog):
    config = make_config(LEARN, "redis://127.0.0.1:1/0", dns_server.nameservers)
    from mx6milter.dns import Resolver
    from mx6milter.evaluate import Evaluator
    evaluator = Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))
    started = time.monotonic()
    raw = b"From: <alice@example.org>\r\nSubject: hi\r\n\r\nHello.\r\n"
    result = run_milter(evaluator, raw, client_ip="198.51.100.7", mail_from="alice@example.org",
                        rcpts=("friend@greenlist.example",), macros=AUTH)
    elapsed = time.monotonic() - started
    assert result.rc == Milter.ACCEPT
    assert evaluator.learner.flush(10)
    assert (evaluator.learner.failed, evaluator.learner.learnt) == (1, 0)
    line = next(r.getMessage() for r in caplog.records if r.name == "mx6milter.evidence.learned")
    assert line.startswith("addressbook learning: Redis: ")
    assert line.endswith(" (1 messages not learnt so far)")
    print(f"outbound message with Redis down: {elapsed * 1000:.1f} ms")



def test_mx6ctl_lists_what_was_learnt(evaluator_factory, tmp_path, redis_url, dns_server):
    from ctl_runner import Ctl
    evaluator = evaluator_factory(LEARN)
    evaluator.store.load("ab", "local", [("alice@example.org", "primed@partner.example", "0")])
    outbound(evaluator, ["friend@greenlist.example"])
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers)
    run = ctl("addressbook", "list", "alice@example.org", "--source", "learned")
    assert run.rc == 0, run.err
    lines = run.out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("alice@example.org\tfriend@greenlist.example\tsource=learned\texpires=")
    everything = ctl("addressbook", "list", "alice@example.org").out
    assert "source=local" in everything and "source=learned" in everything
