"""Drive Mx6Milter in-process through pymilter's TestCtx, with exact message bytes.

TestCtx's own feeder re-serialises the message with bare LF line ends, which
would break DKIM; this one passes headers and body as an MTA does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import Milter
from Milter.testctx import TestCtx

from mx6milter.milter import Mx6Milter
from mx6milter.model import MessageBuilder, Session


class RecordingCtx(TestCtx):
    def __init__(self):
        super().__init__(logfile=None)
        self.added = []      # (name, value, index)
        self.changed = []    # (name, index, value)

    def addheader(self, field, value, idx):
        # Mx6Milter negotiates SMFIP_HDR_LEADSPC: the MTA adds no space after the colon.
        assert value.startswith(" "), f"{field}: added value lacks its leading space: {value!r}"
        self.added.append((field, value[1:], idx))

    def chgheader(self, field, idx, value):
        self.changed.append((field, idx, value))


@dataclass
class Result:
    rc: int
    reply: tuple | None
    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    stage: str = "eom"

    def header(self, name):
        values = [v for n, v, _ in self.added if n.lower() == name.lower()]
        return values[0] if values else None


def split_message(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        elif line:
            name, _, value = line.partition(b":")
            headers.append((name.decode("ascii"), value))
    return headers, body


def to_crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


GOES_ON = (Milter.CONTINUE, Milter.NOREPLY)   # NOREPLY: a callback negotiated without answer


def run_milter(evaluator, raw: bytes, client_ip="2001:db8::1", helo="mail.example.net",
               mail_from="sender@example.net", rcpts=("user@example.org",), macros=None,
               milter_class=Mx6Milter) -> Result:
    """One connection with one message; returns the milter's answer and its edits.
    TestCtx negotiates every protocol option: the no-reply callbacks answer NOREPLY."""
    Milter.factory = lambda: milter_class(evaluator)
    ctx = RecordingCtx()
    defaults = {"i": "4ABCDEF", "j": "mx.example.org", "{daemon_name}": "smtpd"}
    for name, value in {**defaults, **(macros or {})}.items():
        ctx._setsymval(name, value)
    rc = ctx._connect(host="client.example.net", helo=helo, ip=client_ip)
    if rc != Milter.CONTINUE:
        return Result(rc, ctx._reply, stage="connect")
    raw = to_crlf(raw)
    headers, body = split_message(raw)
    steps = [lambda: ctx._envfrom(f"<{mail_from}>")]
    steps += [lambda r=r: ctx._envrcpt(f"<{r}>") for r in rcpts]
    for step in steps:
        rc = step()
        if rc not in GOES_ON:
            return Result(rc, ctx._reply, stage="envelope")
    for name, value in headers:
        rc = ctx._priv.header_bytes(name, value)
        if rc not in GOES_ON:
            return Result(rc, ctx._reply, ctx.added, ctx.changed, stage="header")
    rc = ctx._eoh()
    if rc != Milter.CONTINUE:
        return Result(rc, ctx._reply, ctx.added, ctx.changed, stage="eoh")
    for start in range(0, len(body), 65536):
        rc = ctx._priv.body(body[start:start + 65536])
        if rc not in GOES_ON:
            return Result(rc, ctx._reply, ctx.added, ctx.changed, stage="body")
    rc = ctx._eom()
    return Result(rc, ctx._reply, ctx.added, ctx.changed)


def decide(evaluator, client_ip, raw, recipients, mail_from="bounce@example.com"):
    """One message judged by Evaluator.evaluate as the milter would, without the milter:
    headers as the MTA hands them over; returns the Outcome."""
    builder = MessageBuilder(1 << 20)
    headers, body = split_message(raw)
    for name, value in headers:
        builder.add_header(name, value)
    builder.add_body(body)
    session = Session(client_ip=client_ip, helo="mail.example.com", mail_from=mail_from,
                      recipients=list(recipients))
    return evaluator.evaluate(session, builder.build())
