"""End to end with a real Sendmail (unpacked by scripts/install-sendmail.sh).

Sendmail is configured with contrib/sendmail/mx6milter.mc verbatim (only the
socket path moved): INPUT_MAIL_FILTER with F=T and the macro lists. It
listens on [::1] and 127.0.0.1 and relays example.org to smtp-sink. The same
ledger as the Postfix tests counts every message sent against what arrived.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

import sendmail
from e2e import (AUTHSERV, FIRST_451, UNKNOWN, WHITELISTED, Ledger, fields_except_received,
                 sent_fields)
from e2e import live_redis, sources  # noqa: F401  (fixtures)
from milterd import MilterDaemon, mx6ctl

# Sendmail's answer when a milter with F=T cannot be reached.
SENDMAIL_MILTER_DOWN = "4.3.2 Please try again later"


class SendmailMta:
    def __init__(self, directory: Path, milter: MilterDaemon, server: sendmail.PrivateSendmail):
        self.dir, self.milter, self.server = directory, milter, server
        self.port = server.port
        self.ledger = Ledger()


@pytest.fixture(scope="module")
def mta(sources, live_redis, dns_server):
    if not sendmail.available():
        pytest.fail("no Sendmail in .venv/sendmail: run scripts/install-sendmail.sh "
                    "(scripts/install.sh does)")
    directory = Path(tempfile.mkdtemp(prefix="mx6-sendmail-milter-"))
    directory.chmod(0o755)
    socket_path = directory / "mx6milter.sock"
    milter = MilterDaemon(directory, f"unix:{socket_path}", live_redis.url,
                          extra=f"[policy]\nauthserv_id = {AUTHSERV}\n",
                          nameservers=dns_server.nameservers).start()
    server = sendmail.PrivateSendmail(str(socket_path))
    try:
        mx6ctl(milter.conf, "ip", "add", "2001:db8:6::/48")
        server.start()
        yield SendmailMta(directory, milter, server)
    finally:
        server.close()
        milter.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_ipv6_whitelisted_arrives_with_verdict_and_auth_results(mta):
    msg_id, _, reply = mta.ledger.message(mta.port, WHITELISTED)
    assert (reply.code, reply.stage) == (250, "data"), reply
    message = mta.ledger.check(mta.server)[msg_id]
    fields = message.header_lines()
    assert [f for f in fields if f.startswith("X-MX6-Verdict:")] == [
        f"X-MX6-Verdict: whitelisted; evidence=ip=pass(2001:db8:6::/48 source=local); "
        f"mode=defensive; by={AUTHSERV}"]
    results = [f for f in fields if f.startswith("Authentication-Results:")]
    assert len(results) == 1 and results[0].startswith(f"Authentication-Results: {AUTHSERV}; spf=pass")


def test_ipv6_unknown_gets_the_exact_451(mta):
    _, _, reply = mta.ledger.message(mta.port, UNKNOWN)
    assert (reply.code, reply.stage) == (451, "data")
    assert reply.lines[0] == FIRST_451
    assert reply.lines[1].startswith(f"4.7.26 Authentication-Results: {AUTHSERV}; spf=fail")
    assert len(reply.lines) == 2
    mta.ledger.check(mta.server)


def test_ipv4_arrives_untouched_and_forged_headers_go(mta):
    plain_id, plain_raw, plain = mta.ledger.message(mta.port, "127.0.0.1")
    forged = [f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=example.net",
              "Authentication-Results: other.example; dkim=pass header.d=example.net",
              "X-MX6-Verdict: whitelisted; evidence=forged"]
    forged_id, forged_raw, forged_reply = mta.ledger.message(mta.port, "127.0.0.1", headers=forged)
    assert plain.code == forged_reply.code == 250
    arrived = mta.ledger.check(mta.server)
    assert fields_except_received(arrived[plain_id]) == sent_fields(plain_raw)
    kept = [f for f in sent_fields(forged_raw) if f not in (forged[0], forged[2])]
    assert fields_except_received(arrived[forged_id]) == kept


def test_fifty_recipients_and_ten_megabytes(mta):
    rcpts = [f"user{n:02d}@example.org" for n in range(50)]
    many_id, _, many = mta.ledger.message(mta.port, WHITELISTED, rcpts=rcpts)
    body = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n" * 140000
    big_id, _, big = mta.ledger.message(mta.port, WHITELISTED, body=body)
    assert many.code == big.code == 250
    arrived = mta.ledger.check(mta.server)
    assert sorted(arrived[many_id].rcpts) == rcpts
    assert arrived[big_id].body.rstrip(b"\n") == body.replace(b"\r\n", b"\n").rstrip(b"\n")


def test_milter_stopped_sendmail_tempfails_and_loses_nothing(mta):
    """contrib's F=T: no milter, no mail in, none lost; the retry gets the verdict."""
    sources_ = (WHITELISTED, UNKNOWN, "127.0.0.1")
    assert mta.milter.terminate() == 0
    try:
        sent = [mta.ledger.message(mta.port, source) for source in sources_]
        for _, _, reply in sent:
            assert (reply.code, reply.lines) == (451, [SENDMAIL_MILTER_DOWN]), reply
        mta.ledger.check(mta.server)
    finally:
        mta.milter.start()
    codes = []
    for (msg_id, raw, _), source in zip(sent, sources_):
        del mta.ledger.refused[msg_id]
        codes.append(mta.ledger.send(mta.port, source, raw, msg_id=msg_id).code)
    assert codes == [250, 451, 250]
    mta.ledger.check(mta.server)
