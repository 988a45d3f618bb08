"""The mail path under hostile or broken input: no lost mail, no harm to IPv4.

Real daemon (tests/support/milterd.py) driven by miltertest, real Redis, or the
in-process pymilter harness for several messages on one connection.
"""
from __future__ import annotations

import os
import signal
import time

import Milter
import pytest

from conftest import make_config
from harness import GOES_ON, RecordingCtx, run_milter
from milterd import MilterDaemon
from mx6milter.dns import Resolver
from mx6milter.evaluate import Evaluator
from mx6milter.milter import Mx6Milter
from mx6milter.store import Store, StoreUnavailable
from servers import RedisServer
from miltertest_driver import miltertest


@pytest.fixture
def daemon(tmp_path, redis_url):
    with MilterDaemon(tmp_path, f"unix:{tmp_path}/m.sock", redis_url) as milter:
        yield milter


@pytest.mark.parametrize("client, expect", [("192.0.2.10", "a"), ("2001:db8:99::1", "y")])
def test_helo_that_is_not_utf8_is_no_filter_failure(daemon, client, expect):
    """pymilter fails to decode it before our code runs; libmilter's default then
    answered 451 4.3.0 "Filter failure" to the HELO of IPv4 mail."""
    miltertest("eightbit_helo.lua", daemon.socket, CLIENT=client, EXPECT=expect)
    assert "UnicodeDecodeError" in daemon.log()


@pytest.fixture
def ipv4_evaluator(redis_url):
    """An evaluator for sessions that never reach DNS (IPv4)."""
    config = make_config("[policy]\nauthserv_id = mx.example.org\n", redis_url)
    return Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))


@pytest.mark.parametrize("comment", [
    "(" * 9 + "deep" + ")" * 9,            # the old reading unnested 8 levels
    "(" + "x" * 5000 + ")",                # the old reading looked at 4096 characters
    r"(a \) b ; c)",                       # quoted-pair and ';' inside a comment
])
def test_forged_authentication_results_behind_a_leading_comment_is_removed(ipv4_evaluator,
                                                                          comment):
    """RFC 8601 allows CFWS before the authserv-id; a reader that skips it sees our id."""
    forged = f"{comment} mx.example.org; dkim=pass header.d=example.net"
    raw = (b"From: a@example.net\r\nAuthentication-Results: " + forged.encode() +
           b"\r\nAuthentication-Results: (mx.example.org) other.example; dkim=pass\r\n"
           b"Subject: hi\r\n\r\nbody\r\n")
    result = run_milter(ipv4_evaluator, raw, client_ip="192.0.2.10")
    assert result.rc == Milter.ACCEPT
    assert result.changed == [("Authentication-Results", 1, "")]


def redis_section(url: str, timeout: float):
    return make_config(f"[redis]\ntimeout = {timeout}\n", url).redis


def test_a_redis_that_stops_answering_costs_one_timeout_then_fails_fast():
    """A hung Redis (SIGSTOP): the first lookup waits [redis] timeout, the ones in
    the next second fail at once, then lookups work again once it answers."""
    server = RedisServer().start()
    try:
        store = Store.from_config(redis_section(server.url, 1.0))
        queries = {"ip": [("", "20010db8/32")]}
        assert store.lookup(queries) == {"ip": []}
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.lookup(queries)
            assert time.monotonic() - started >= 0.9
            # Failed at once, without asking the stopped server. (The window was once
            # counted from the start of the failed lookup, so with a timeout of 1 s it
            # had already passed: every message waited again.)
            with pytest.raises(StoreUnavailable, match="marked down after a recent failure"):
                store.lookup(queries)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        time.sleep(1.0)
        assert store.lookup(queries) == {"ip": []}
    finally:
        server.close()


def test_noscript_with_a_user_that_may_not_load_scripts_is_redis_unavailable(redis_server,
                                                                             redis_url):
    """After a Redis restart the scripts are gone; loading them again may fail too
    (here an ACL user without SCRIPT). That is Redis being unavailable, not a bug:
    in report mode a bug answers 451 where Redis unavailable accepts and reports."""
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "noscript", "on", ">secret-pw", "~*", "&*",
                          "+@all", "-script")
    try:
        url = f"redis://noscript:secret-pw@127.0.0.1:{redis_server.port}/0"
        store = Store.from_config(redis_section(url, 1.0))
        admin.script_flush()
        with pytest.raises(StoreUnavailable):
            store.lookup({"ip": [("", "20010db8/32")]})
    finally:
        admin.execute_command("ACL", "DELUSER", "noscript")


def test_sighup_with_an_unusable_redis_url_keeps_the_daemon_running(daemon):
    text = daemon.conf.read_text()
    daemon.reload(text.replace(f"url = {daemon.text.split('url = ')[1].split()[0]}",
                               "url = redis://127.0.0.1:abc/0"))
    daemon.wait_log("reload refused, keeping the running configuration")
    assert daemon.process.poll() is None
    miltertest("eightbit_helo.lua", daemon.socket, CLIENT="192.0.2.10", EXPECT="a")


def send_message(ctx, headers, body=b"body\r\n", abort_after_headers=False):
    """One transaction on an open TestCtx connection; returns (eom answer, changes)."""
    ctx.changed.clear()
    assert ctx._envfrom("<a@example.net>") == Milter.CONTINUE
    assert ctx._envrcpt("<b@example.org>") in GOES_ON
    for name, value in headers:
        assert ctx._priv.header_bytes(name, value) in GOES_ON
    # TestCtx's _eoh/_eom/_abort close the connection; libmilter does not.
    if abort_after_headers:            # RSET or a dropped DATA
        assert ctx._priv.abort() == Milter.CONTINUE
        return None, list(ctx.changed)
    rc = ctx._priv.eoh()
    if rc == Milter.CONTINUE:
        assert ctx._priv.body(body) in GOES_ON
        ctx._stage = Milter.M_EOM      # for TestCtx.getsymval
        rc = ctx._priv.eom()
        ctx._stage = None
    return rc, list(ctx.changed)


def test_several_messages_on_one_connection_share_no_header_edits(ipv4_evaluator, caplog):
    Milter.factory = lambda: Mx6Milter(ipv4_evaluator)
    ctx = RecordingCtx()
    ctx._setsymval("i", "4ABC")
    assert ctx._connect(host="client.example.net", helo="mail.example.net",
                        ip="192.0.2.10") == Milter.CONTINUE
    foreign = b" other.example; dkim=pass"
    ours = b" mx.example.org; dkim=pass"
    # Same name in other cases counts as the same header (Postfix and Sendmail
    # match names case-insensitively), and a kept header before it counts too.
    rc, changed = send_message(ctx, [("authentication-results", foreign),
                                     ("X-MX6-VERDICT", b" forged"),
                                     ("AUTHENTICATION-RESULTS", ours),
                                     ("x-mx6-verdict", b" forged again")])
    assert rc == Milter.ACCEPT
    assert changed == [("x-mx6-verdict", 2, ""), ("AUTHENTICATION-RESULTS", 2, ""),
                       ("X-MX6-VERDICT", 1, "")]
    rc, changed = send_message(ctx, [("Subject", b" clean")])
    assert (rc, changed) == (Milter.ACCEPT, [])
    _, changed = send_message(ctx, [("X-MX6-Verdict", b" forged")], abort_after_headers=True)
    assert changed == []
    rc, changed = send_message(ctx, [("Subject", b" clean after RSET")])
    assert (rc, changed) == (Milter.ACCEPT, [])
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


class ClassifyBug(Evaluator):
    """A bug in the envelope stage (fault injected: no input reaches one today)."""

    def session_class(self, session):
        raise RuntimeError("injected")


def test_a_bug_before_end_of_message_still_strips_forged_headers(redis_url, caplog):
    """The safety net answered ACCEPT for a session not (yet) judged: the MTA then
    skipped the rest of the message, so forged verdicts went through untouched."""
    config = make_config("[policy]\nauthserv_id = mx.example.org\n", redis_url)
    evaluator = ClassifyBug(config, Store.from_config(config.redis),
                            Resolver.from_config(config.dns))
    raw = b"From: a@example.net\r\nX-MX6-Verdict: whitelisted; forged\r\n\r\nbody\r\n"
    result = run_milter(evaluator, raw, client_ip="192.0.2.10")
    assert "BUG in envfrom callback" in caplog.text
    assert (result.stage, result.rc) == ("eom", Milter.ACCEPT)
    assert result.changed == [("X-MX6-Verdict", 1, "")]


class AuthResultsBug(Mx6Milter):
    """A bug in the header stage, whose answer the MTA does not wait for (fault injected)."""

    def _mark_auth_results(self, *args):
        raise RuntimeError("injected")


@pytest.mark.parametrize("client, verdict", [("2001:db8:99::1", Milter.TEMPFAIL),
                                             ("192.0.2.10", Milter.ACCEPT)])
def test_a_bug_in_a_callback_without_reply_tempfails_the_ipv6_message_at_eom(redis_url, caplog,
                                                                             client, verdict):
    config = make_config("", redis_url)
    evaluator = Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))
    raw = b"From: a@example.net\r\nAuthentication-Results: mx.example.org; none\r\n\r\nbody\r\n"
    result = run_milter(evaluator, raw, client_ip=client, milter_class=AuthResultsBug)
    assert "BUG in header callback" in caplog.text
    assert (result.stage, result.rc) == ("eom", verdict)
    if verdict == Milter.TEMPFAIL:
        assert result.reply[:2] == ("451", "4.3.0")


class EnvelopeBug(Evaluator):
    """Classifies at connect, then fails in the envelope stage (fault injected)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = 0

    def session_class(self, session):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("injected")
        return super().session_class(session)


def test_a_bug_in_the_envelope_of_an_ipv6_session_tempfails(redis_url, caplog):
    """An IPv6 session is judged from connect on: a fault before MAIL FROM completed
    must not let its message through unjudged."""
    config = make_config("", redis_url)
    evaluator = EnvelopeBug(config, Store.from_config(config.redis), Resolver.from_config(config.dns))
    result = run_milter(evaluator, b"From: a@example.net\r\n\r\nbody\r\n", client_ip="2001:db8:99::1")
    assert "BUG in envfrom callback" in caplog.text
    assert (result.stage, result.rc) == ("envelope", Milter.TEMPFAIL)
    assert result.reply[:2] == ("451", "4.3.0")
