"""Addressbooks learnt from outbound mail, end to end through a real Postfix.

A client in trusted_networks (Postfix's mynetworks too, so it may relay) sends
out; its recipient's reply over IPv6, SPF-authenticated for greenlist.example,
is then whitelisted by the addressbook rule. A blast teaches nothing; Redis
hung does not delay or fail outbound mail. The milter has a Redis of its own,
so stopping it disturbs no other test.
"""
from __future__ import annotations

import os
import signal

import pytest

from e2e import AUTHSERV, FIRST_451, Ledger, loopback, postfix_with_milter
from milterd import mx6ctl
from servers import RedisServer, wait_for

OUTBOUND = "2001:db8:13::e13"      # the submission client: trusted
CORRESPONDENT = "2001:db8:8::e13"  # inside greenlist.example's SPF (ip6:2001:db8:8::/48)
MAIN_CF = ("smtpd_milters = unix:mx6milter/mx6milter.sock\nmilter_default_action = tempfail\n"
           "milter_protocol = 6\nmynetworks = 127.0.0.0/8 [2001:db8:13::]/64\n")
MILTER = ("[milter]\nmax_message_size = 2M\nuser = nobody\nsocket_group = postfix\n"
          "[redis]\ntimeout = 3\n"
          "[policy]\ntrusted_networks = 2001:db8:13::/64\n"
          "[addressbook]\nlearn = yes\nlocal_domains = example.org\n[greenlist]\nfcrdns = no\n")


@pytest.fixture(scope="module")
def mta(dns_server, tmp_path_factory):
    redis_server = RedisServer().start()
    try:
        with loopback((OUTBOUND, CORRESPONDENT)), postfix_with_milter(
                tmp_path_factory.mktemp("learn"), redis_server.url, dns_server.nameservers,
                MILTER, main_cf=MAIN_CF) as (postfix, milter):
            postfix.redis, postfix.milter, postfix.ledger = redis_server, milter, Ledger()
            yield postfix
    finally:
        redis_server.close()


def message(ledger, sender, rcpt):
    msg_id = ledger.new_id()
    raw = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: learning\r\n"
           f"Message-ID: {msg_id}\r\n\r\nHello.\r\n").encode()
    return msg_id, raw


def send(mta, source, sender, rcpts):
    msg_id, raw = message(mta.ledger, sender, rcpts[0])
    return mta.ledger.send(mta.port, source, raw, rcpts, mail_from=sender, msg_id=msg_id)


def learnt(mta, user):
    return mx6ctl(mta.milter.conf, "addressbook", "list", user, "--source", "learned")


def test_outbound_teaches_the_pair_and_the_reply_is_accepted(mta):
    before = send(mta, CORRESPONDENT, "friend@greenlist.example", ["alice@example.org"])
    # SPF authenticated the correspondent, but nothing knows it yet: 4.7.1, not 4.7.26
    assert (before.code, before.lines[0]) == (451, FIRST_451.replace("4.7.26", "4.7.1", 1))
    out = send(mta, OUTBOUND, "alice@example.org", ["Friend@greenlist.example"])
    assert out.code == 250
    wait_for(lambda: "friend@greenlist.example" in learnt(mta, "alice@example.org"),
             what="the learnt entry")
    assert learnt(mta, "alice@example.org").startswith(
        "alice@example.org\tfriend@greenlist.example\tsource=learned\texpires=")
    reply = send(mta, CORRESPONDENT, "friend@greenlist.example", ["alice@example.org"])
    assert reply.code == 250, reply
    arrived = mta.ledger.check(mta)
    verdicts = [v for m in arrived.values() for v in m.header("X-MX6-Verdict")]
    assert verdicts == [f"whitelisted; evidence=addressbook=pass(1 recipients via=spf); "
                        f"mode=defensive; by={AUTHSERV}"]


def test_a_200_recipient_blast_teaches_nothing(mta):
    rcpts = [f"member{n:03d}@list.example" for n in range(200)]
    out = send(mta, OUTBOUND, "bob@example.org", rcpts)
    assert out.code == 250
    marker = send(mta, OUTBOUND, "bob@example.org", ["marker@list.example"])   # queued after it
    assert marker.code == 250
    wait_for(lambda: "marker@list.example" in learnt(mta, "bob@example.org"), what="the marker")
    assert learnt(mta, "bob@example.org").count("\n") == 1
    mta.ledger.check(mta)


def test_redis_hung_does_not_delay_or_fail_outbound_mail(mta):
    os.kill(mta.redis.process.pid, signal.SIGSTOP)
    try:
        out = send(mta, OUTBOUND, "carol@example.org", ["dave@partner.example"])
        # Answered while the learner still waits for Redis ([redis] timeout = 3 s):
        # the write is not on the message's path.
        assert out.code == 250
        assert "addressbook learning: Redis:" not in mta.milter.log()
        mta.milter.wait_log("addressbook learning: Redis:", timeout=30)
    finally:
        os.kill(mta.redis.process.pid, signal.SIGCONT)
    mta.ledger.check(mta)
