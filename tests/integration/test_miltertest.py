"""Sendmail's view of the protocol: OpenDKIM's miltertest against the real daemon.

Sendmail and Postfix cannot be installed side by side as packages, so the
scripts in tests/support/miltertest/ play the MTA the way Sendmail does: its macro set
({if_addr}, {daemon_name}, {client_addr}, {auth_authen}, i, j, _), its
connection info, its header and body steps. The daemon is the real
``mx6milter -c CONF`` on a unix socket, and on TCP, with a real Redis and BIND.
"""
from __future__ import annotations

import pytest

from milterd import MilterDaemon, mx6ctl
from miltertest_driver import AUTHSERV, expected_reply, miltertest
from servers import free_port


@pytest.fixture(params=["unix", "tcp"])
def daemon(request, tmp_path, redis_url, dns_server):
    socket = f"unix:{tmp_path}/m.sock" if request.param == "unix" else \
        f"inet:{free_port()}@127.0.0.1"
    with MilterDaemon(tmp_path, socket, redis_url, nameservers=dns_server.nameservers) as milter:
        mx6ctl(milter.conf, "ip", "add", "2001:db8:6::/48")
        yield milter


def test_ipv6_unknown_gets_the_exact_multiline_451(daemon):
    reply = expected_reply(daemon, "2001:db8:99::1")
    first, second = reply.split("\r\n")
    # nothing authenticated (spf=fail, no signature): RFC 7372's 4.7.26
    assert first == "451-4.7.26 Not accepted over IPv6 from this sender; please retry over IPv4"
    assert second.startswith(f"451 4.7.26 Authentication-Results: {AUTHSERV}; spf=fail")
    miltertest("ipv6_fallback.lua", daemon.socket, CLIENT="2001:db8:99::1", REPLY=reply)


def test_ipv6_whitelisted_accepted_with_headers(daemon):
    verdict = (f" whitelisted; evidence=ip=pass(2001:db8:6::/48 source=local); "
               f"mode=defensive; by={AUTHSERV}")
    miltertest("ipv6_accept.lua", daemon.socket, CLIENT="2001:db8:6::10", VERDICT=verdict)


# IPv4 mail is read to its end for the IPv4 history ([greenlist] history, on by default).
@pytest.mark.parametrize("client, client_addr, auth, read_body", [
    ("192.0.2.10", "192.0.2.10", "", "yes"),              # IPv4
    ("::ffff:192.0.2.10", "::ffff:192.0.2.10", "", "yes"),  # IPv4-mapped IPv6 is IPv4
    ("2001:db8:99::1", "2001:db8:99::1", "alice", "no"),  # authenticated submission
    ("unspec", "192.0.2.10", "", "yes"),                  # address only in {client_addr}
])
def test_sessions_that_are_not_judged(daemon, client, client_addr, auth, read_body):
    miltertest("not_judged.lua", daemon.socket, CLIENT=client, CLIENT_ADDR=client_addr, AUTH=auth,
               READ_BODY=read_body)


def test_ipv4_body_not_asked_for_with_the_history_off(daemon):
    daemon.reload(daemon.conf.read_text() + "[greenlist]\nhistory = no\n")
    daemon.wait_log("configuration reloaded")
    miltertest("not_judged.lua", daemon.socket, CLIENT="192.0.2.10", AUTH="", READ_BODY="no")


def test_client_addr_macro_is_used_when_the_connect_info_has_none(daemon):
    """Sendmail on a unix socket or an unknown family: only {client_addr} tells."""
    reply = expected_reply(daemon, "2001:db8:99::1")
    miltertest("ipv6_fallback.lua", daemon.socket, CLIENT="unspec",
               CLIENT_ADDR="2001:db8:99::1", REPLY=reply)


def test_forged_headers_deleted_from_ipv4_mail(daemon):
    miltertest("forged_headers.lua", daemon.socket, CLIENT="192.0.2.10")


def test_mx6_mode_550_after_reload(daemon):
    """SIGHUP to mode = mx6: the next session gets the 550 with the registration URL."""
    text = daemon.conf.read_text().replace(
        "[policy]\n", "[policy]\nmode = mx6\nregistration_url = https://mx.example.org/mx6\n")
    daemon.reload(text)
    daemon.wait_log("configuration reloaded")
    reply = expected_reply(daemon, "2001:db8:99::1")
    assert reply.startswith("550-5.5.7 Fall back to IPv4")
    assert reply.endswith("\r\n550 5.5.7 To be accepted over IPv6: https://mx.example.org/mx6")
    miltertest("ipv6_fallback.lua", daemon.socket, CLIENT="2001:db8:99::1", REPLY=reply)
