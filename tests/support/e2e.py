"""Shared by the end-to-end tests with real MTAs: SMTP client, ledger, client addresses,
a private Postfix with its milter.

Every message sent is recorded in a Ledger with the reply it got; a test
ends by checking the MTA's sink against it: every accepted message arrived
exactly once, for exactly its recipients, and nothing refused arrived.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import os
import smtplib
import subprocess
from dataclasses import dataclass, field

import pytest

from milterd import MilterDaemon
from postfix import PrivatePostfix

WHITELISTED = "2001:db8:6::e2e"     # inside example.net's SPF (ip6:2001:db8:6::/48)
UNKNOWN = "2001:db8:99::e2e"        # not whitelisted, outside example.net's SPF
SOURCES = (WHITELISTED, UNKNOWN)
AUTHSERV = "mx.example.org"
FIRST_451 = "4.7.26 Not accepted over IPv6 from this sender; please retry over IPv4"
MILTER_DOWN = "4.7.1 Service unavailable - try again later"   # Postfix's own, default action


# --- sending and counting

@dataclass
class Reply:
    code: int
    lines: list          # text of each reply line without the code, e.g. "4.7.26 ..."
    stage: str           # the SMTP step that answered last: connect, mail, rcpt, data


@dataclass
class Ledger:
    """What was sent and how it was answered; checks the sink against it."""
    accepted: dict = field(default_factory=dict)   # message-id -> recipients
    refused: dict = field(default_factory=dict)    # message-id -> Reply
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return f"<e2e-{os.getpid()}-{next(self.counter)}@example.net>"

    def send(self, port: int, source: str, raw: bytes, rcpts=("user@example.org",),
             mail_from="sender@example.net", msg_id: str | None = None,
             host: str | None = None) -> Reply:
        reply = smtp_send(port, source, mail_from, list(rcpts), raw, host=host)
        if reply.code == 250:
            self.accepted[msg_id] = sorted(rcpts)
        else:
            self.refused[msg_id] = reply
        return reply

    def message(self, port: int, source: str, rcpts=("user@example.org",), headers=(),
                body: bytes = b"Hello.\r\n", host: str | None = None) -> tuple:
        msg_id = self.new_id()
        raw = make_message(msg_id, headers, body)
        return msg_id, raw, self.send(port, source, raw, rcpts, msg_id=msg_id, host=host)

    def check(self, mta) -> dict:
        """Nothing lost, nothing duplicated; returns message-id -> SinkMessage."""
        mta.wait_until_idle()
        arrived = collections.defaultdict(list)
        for message in mta.sink.messages():
            arrived[message.message_id].append(message)
        unknown = set(arrived) - set(self.accepted)
        assert not unknown, f"arrived but never accepted: {unknown}"
        for msg_id, rcpts in self.accepted.items():
            copies = arrived.get(msg_id, [])
            delivered = sorted(r for m in copies for r in m.rcpts)
            assert delivered == rcpts, f"{msg_id}: sent to {len(rcpts)}, delivered {len(delivered)}"
        for msg_id in self.refused:
            assert msg_id not in arrived, f"{msg_id} was refused but arrived"
        return {msg_id: copies[0] for msg_id, copies in arrived.items()}


def smtp_send(port: int, source: str, mail_from: str, rcpts: list, raw: bytes,
              helo: str = "mail.example.net", host: str | None = None) -> Reply:
    """One SMTP transaction from SOURCE to HOST (default: 127.0.0.1 or ::1, as SOURCE)."""
    host = host or ("127.0.0.1" if "." in source else "::1")
    smtp = smtplib.SMTP(local_hostname=helo, timeout=120, source_address=(source, 0))
    try:
        code, text = smtp.connect(host, port)
        if code != 220:
            return _reply(code, text, "connect")
        code, text = smtp.ehlo()
        if code != 250:
            return _reply(code, text, "ehlo")
        code, text = smtp.mail(mail_from)
        if code != 250:
            return _reply(code, text, "mail")
        for rcpt in rcpts:
            code, text = smtp.rcpt(rcpt)
            if code != 250:
                return _reply(code, text, "rcpt")
        code, text = smtp.data(raw)
        return _reply(code, text, "data")
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _reply(code: int, text: bytes, stage: str) -> Reply:
    return Reply(code, text.decode().split("\n"), stage)


def make_message(msg_id: str, headers=(), body: bytes = b"Hello.\r\n") -> bytes:
    lines = [b"From: Sender <sender@example.net>", b"To: user@example.org",
             b"Subject: mx6milter end to end", b"Date: Sun, 22 Nov 2026 12:00:00 +0000",
             b"Message-ID: " + msg_id.encode()]
    lines += [h.encode() for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def sent_fields(raw: bytes) -> list:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    return head.split("\r\n")


def fields_except_received(message) -> list:
    return [f for f in message.header_lines() if not f.lower().startswith("received:")]


@contextlib.contextmanager
def loopback(addresses):
    """ADDRESSES on lo while inside; only those that were not there are removed after."""
    present = subprocess.run(["ip", "-6", "addr", "show", "dev", "lo"], capture_output=True,
                             text=True, check=True).stdout
    added = []
    try:
        for address in addresses:
            if f"inet6 {address}/" not in present:
                subprocess.run(["ip", "-6", "addr", "add", f"{address}/128", "dev", "lo"], check=True)
                added.append(address)
        yield tuple(addresses)
    finally:
        for address in added:
            subprocess.run(["ip", "-6", "addr", "del", f"{address}/128", "dev", "lo"], check=False)


@contextlib.contextmanager
def postfix_with_milter(milter_dir, redis_url: str, nameservers: str, milter_extra: str,
                        **postfix_options):
    """A PrivatePostfix and the MilterDaemon on the socket its smtpd_milters names, in the
    queue directory (contrib/postfix/main.cf's unix:mx6milter/mx6milter.sock, so a chrooted
    smtpd reaches it); yields (postfix, milter) and stops both."""
    postfix = PrivatePostfix(**postfix_options)
    milter = None
    try:
        postfix.start()
        milter = MilterDaemon(milter_dir, f"unix:{postfix.queue_dir}/mx6milter/mx6milter.sock",
                              redis_url, extra=milter_extra, nameservers=nameservers).start()
        yield postfix, milter
    finally:
        if milter is not None:
            milter.stop()
        postfix.close()


@pytest.fixture(scope="module")
def sources():
    """The client addresses, added to lo for the module and removed afterwards."""
    with loopback(SOURCES) as added:
        yield added


@pytest.fixture(scope="module")
def live_redis(redis_server):
    if redis_server.process is None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server
