"""End to end: a DNS whitelist through a real Postfix and the real mx6milter daemon.

Two IPv6 clients on lo, neither on any local list nor authorised by example.net's SPF:
2001:db8:c::13, listed with trust 3 by list.dnswl.example (BIND serving
tests/data/zones/dnswl.example.zone), and 2001:db8:c::20, for which the list answers
127.0.0.255 (refused, over quota). Postfix with contrib/postfix/main.cf; the milter on a
unix socket in the private queue directory.
"""
from __future__ import annotations

import pytest

from e2e import AUTHSERV, Ledger, loopback, postfix_with_milter
from e2e import live_redis  # noqa: F401  (fixture)
from postfix import CONTRIB

LISTED = "2001:db8:c::13"
OVER_QUOTA = "2001:db8:c::20"
ZONE = "list.dnswl.example"


@pytest.fixture(scope="module")
def mta(live_redis, dns_server, tmp_path_factory):  # noqa: F811
    extra = (f"[milter]\nsocket_group = postfix\nuser = nobody\n"
             f"[policy]\nauthserv_id = {AUTHSERV}\n[dnswl]\nzones = {ZONE}\n")
    with loopback((LISTED, OVER_QUOTA)), postfix_with_milter(
            tmp_path_factory.mktemp("dnswl"), live_redis.url, dns_server.nameservers, extra,
            main_cf=(CONTRIB / "main.cf").read_text()) as (postfix, _milter):
        postfix.ledger = Ledger()
        yield postfix


def test_listed_client_is_whitelisted_with_rfc8904_results(mta):
    msg_id, _, reply = mta.ledger.message(mta.port, LISTED)
    assert (reply.code, reply.stage) == (250, "data"), reply
    arrived = mta.ledger.check(mta)[msg_id]
    assert arrived.header("X-MX6-Verdict") == [
        f"whitelisted; evidence=dnswl=pass({ZONE} 127.0.3.3 trust=high); mode=defensive; by={AUTHSERV}"]
    assert arrived.header("Authentication-Results") == [
        f"{AUTHSERV}; spf=fail smtp.mailfrom=sender@example.net; dkim=none; "
        "dmarc=fail header.from=example.net policy.dmarc=reject; "
        f"dnswl=pass dns.zone={ZONE} policy.ip=127.0.3.3"]


def test_over_quota_answer_is_no_listing(mta):
    _, _, reply = mta.ledger.message(mta.port, OVER_QUOTA)
    assert (reply.code, reply.stage) == (451, "data"), reply
    assert reply.lines[0] == "4.7.26 Not accepted over IPv6 from this sender; please retry over IPv4"
    text = " ".join(line.split(" ", 1)[1] for line in reply.lines)
    assert (f'dnswl=permerror reason="query refused or over quota" dns.zone={ZONE} '
            "policy.ip=127.0.0.255") in text
    mta.ledger.check(mta)
