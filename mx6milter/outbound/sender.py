"""An MX6-aware SMTP sender: deliver one message by the plan of ``resolve_plan``.

IPv6 first where the plan allows it; on the configured "fall back to IPv4"
reply (recognised by its basic code AND its enhanced status code, so a plain
``550 5.1.1`` is never mistaken for it) the rest of the delivery uses IPv4
only; on 4xx, an unreachable host or a broken conversation it tries the next
address, as RFC 5321 asks. A recipient is never offered to a second host once
a host accepted the message for it, and when the reply to the final dot is
lost (the host may have accepted) it is not offered anywhere else either.

``aware=False`` gives a plain RFC 5321 sender (MX records, IPv6 and IPv4),
which the tests use as the MX6-unaware party.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field

from .plan import (SMTP_PORT, Attempt, BadName, Plan, describe, normalize_domain,
                   resolve_ipv4_fallback, resolve_plan)

MAX_REPLY_LINES = 100         # a hostile server may stream lines forever
MAX_LINE = 4096               # RFC 5321 allows 512 octets; be lenient, but bounded
ADDRESS = re.compile(r"[\x21-\x7e]{1,256}")
STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")

DELIVERED, DEFERRED, BOUNCED = "delivered", "deferred", "bounced"


class BadSendOption(ValueError):
    """A bad address or option from the caller."""


@dataclass(frozen=True)
class Options:
    helo: str = ""                           # default: this host's FQDN
    aware: bool = True                       # False: a plain, MX6-unaware sender
    fallback_code: str = "550"
    fallback_status: str = "5.5.7"
    mx_port: int = SMTP_PORT             # MX route only; SRV records carry their port
    source_ipv4: str | None = None           # bind outgoing connections to these
    source_ipv6: str | None = None
    connect_timeout: float = 30.0
    command_timeout: float = 300.0           # RFC 5321 4.5.3.2 asks for minutes
    data_timeout: float = 600.0              # the reply to the final dot


@dataclass
class ServerReply:
    code: int
    lines: list

    @property
    def status(self) -> str:
        """The enhanced status code of the first line, or ''."""
        m = STATUS.match(self.lines[0]) if self.lines else None
        return ".".join(m.groups()) if m and m.group(1) == str(self.code)[0] else ""

    def __str__(self) -> str:
        return f"{self.code} {self.lines[0] if self.lines else ''}".strip()


@dataclass
class RecipientResult:
    recipient: str
    status: str                              # delivered | deferred | bounced
    reason: str = ""
    host: str = ""
    address: str = ""
    family: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Transcript:
    """What happened, in order: DNS, connections, both sides of the conversation."""
    events: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, kind: str, text: str, **extra) -> None:
        self.events.append({"t": round(time.monotonic() - self.started, 3), "kind": kind,
                            "text": text, **extra})

    def lines(self) -> list:
        marks = {"client": "-> ", "server": "<- ", "connect": "** ", "dns": ";; ",
                 "plan": "   ", "note": "!! ", "result": "== "}
        return [marks.get(e["kind"], "") + e["text"] for e in self.events]

    def connections(self) -> list:
        """(address, family, port) of every connection attempt, in order."""
        return [(e["address"], e["family"], e["port"]) for e in self.events if e["kind"] == "connect"]


@dataclass
class Result:
    recipients: list
    plans: list
    transcript: Transcript

    @property
    def exit_code(self) -> int:
        """0 all delivered; 75 (EX_TEMPFAIL) something deferred; 69 something bounced."""
        statuses = {r.status for r in self.recipients}
        return 69 if BOUNCED in statuses else 75 if DEFERRED in statuses else 0

    def as_dict(self) -> dict:
        return {"recipients": [r.as_dict() for r in self.recipients],
                "plans": [{"domain": p.domain, "route": p.route, "aware": p.aware,
                           "steps": describe(p), "lookups": [list(x) for x in p.lookups],
                           "errors": list(p.errors)} for p in self.plans],
                "transcript": self.transcript.events, "exit_code": self.exit_code}


# --- input ------------------------------------------------------------------------


def check_address(text: str, what: str, empty_ok: bool = False) -> str:
    """An envelope address: ASCII, no spaces or angle brackets, a domain after '@'."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text and empty_ok:
        return ""
    if not ADDRESS.fullmatch(text) or any(ch in text for ch in "<>()[],;\\\"") or "@" not in text:
        raise BadSendOption(f"{what} {text!r}: expected an ASCII address such as user@example.org")
    local, domain = text.rsplit("@", 1)
    if not local:
        raise BadSendOption(f"{what} {text!r}: empty local part")
    try:
        normalize_domain(domain)
    except BadName as err:
        raise BadSendOption(f"{what} {text!r}: {err}") from None
    return text


def wire_data(message: bytes) -> bytes:
    """The message as SMTP DATA: CRLF line ends, leading dots doubled, final CRLF."""
    lines = re.split(rb"\r\n|\r|\n", message)
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


# --- one SMTP conversation --------------------------------------------------------


class ProtocolError(Exception):
    """The server said something that is not SMTP, or went away."""


class Connection:
    def __init__(self, attempt: Attempt, options: Options, transcript: Transcript):
        self.transcript = transcript
        self.options = options
        family = socket.AF_INET6 if attempt.family == 6 else socket.AF_INET
        source = options.source_ipv6 if attempt.family == 6 else options.source_ipv4
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if source:
                self.sock.bind((source, 0))
            self.sock.settimeout(options.connect_timeout)
            self.sock.connect((attempt.address, attempt.port))
        except OSError:
            self.sock.close()
            raise
        self.local = self.sock.getsockname()[0]
        self.buffer = b""

    def _readline(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError("reply line too long")
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise ProtocolError(f"no reply within {timeout:g}s") from None
            except OSError as err:
                raise ProtocolError(f"connection lost: {err}") from None
            if not chunk:
                raise ProtocolError("connection closed by the server")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self, timeout: float | None = None) -> ServerReply:
        timeout = self.options.command_timeout if timeout is None else timeout
        code, lines = None, []
        while True:
            raw = self._readline(timeout)
            text = raw.decode("utf-8", "replace")
            m = re.fullmatch(r"([2-5]\d\d)([ -]?)(.*)", text, re.DOTALL)
            if not m or (code is not None and int(m.group(1)) != code):
                self.transcript.add("server", text[:200])
                raise ProtocolError(f"not an SMTP reply: {text[:80]!r}")
            code = int(m.group(1))
            lines.append(m.group(3))
            self.transcript.add("server", text[:MAX_LINE])
            if m.group(2) != "-":
                return ServerReply(code, lines)
            if len(lines) >= MAX_REPLY_LINES:
                raise ProtocolError("reply with too many lines")

    def send(self, line: str, shown: str | None = None) -> None:
        self.transcript.add("client", shown or line)
        try:
            self.sock.sendall(line.encode("ascii") + b"\r\n")
        except OSError as err:
            raise ProtocolError(f"connection lost: {err}") from None

    def command(self, line: str) -> ServerReply:
        self.send(line)
        return self.reply()

    def send_data(self, data: bytes) -> None:
        self.transcript.add("client", f"({len(data)} bytes of message)")
        self.sock.settimeout(self.options.command_timeout)
        try:
            self.sock.sendall(data + b".\r\n")
        except OSError as err:
            raise ProtocolError(f"connection lost while sending the message: {err}") from None
        self.transcript.add("client", ".")

    def quit(self) -> None:
        try:
            self.send("QUIT")
            self.reply(timeout=min(10.0, self.options.command_timeout))
        except ProtocolError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --- delivery -----------------------------------------------------------------------


@dataclass
class _Try:
    """What one conversation did to the recipients it carried."""
    delivered: list = field(default_factory=list)
    bounced: dict = field(default_factory=dict)        # recipient -> reason
    uncertain: list = field(default_factory=list)      # reply to the final dot lost
    uncertain_reason: str = ""
    fallback: bool = False
    reason: str = ""                                   # why the others are still pending
    reply: str = ""


def _mail_parameters(extensions: set, data: bytes) -> str:
    """MAIL FROM's parameters: BODY=8BITMIME and SIZE when the server offers them."""
    params = ""
    if "8BITMIME" in extensions and any(b > 127 for b in data):
        params += " BODY=8BITMIME"
    if "SIZE" in extensions:
        params += f" SIZE={len(data)}"
    return params


def _record_outcome(done: dict, attempt: Attempt, outcome: _Try) -> None:
    """What ATTEMPT settled, by recipient, into DONE: delivered, bounced, or uncertain."""
    for rcpt in outcome.delivered:
        done[rcpt] = RecipientResult(rcpt, DELIVERED, outcome.reply, attempt.host,
                                     attempt.address, attempt.family)
    for rcpt, why in outcome.bounced.items():
        done[rcpt] = RecipientResult(rcpt, BOUNCED, why, attempt.host,
                                     attempt.address, attempt.family)
    for rcpt in outcome.uncertain:
        done[rcpt] = RecipientResult(
            rcpt, DEFERRED, outcome.uncertain_reason + "; not offered to another "
            "host, which could duplicate the message", attempt.host,
            attempt.address, attempt.family)


class Sender:
    def __init__(self, resolver, options: Options, transcript: Transcript | None = None):
        self.resolver = resolver
        self.options = options
        self.transcript = transcript or Transcript()

    def is_fallback(self, reply: ServerReply) -> bool:
        """The MX6 "fall back to IPv4" reply; a plain sender treats it as any 5xx."""
        return self.options.aware and str(reply.code) == self.options.fallback_code and \
            reply.status == self.options.fallback_status

    def send(self, mail_from: str, recipients: list, message: bytes) -> Result:
        mail_from = check_address(mail_from, "sender", empty_ok=True)
        if not recipients:
            raise BadSendOption("give at least one recipient")
        recipients = list(dict.fromkeys(check_address(r, "recipient") for r in recipients))
        data = wire_data(message)
        by_domain: dict = {}
        for rcpt in recipients:
            by_domain.setdefault(normalize_domain(rcpt.rsplit("@", 1)[1]), []).append(rcpt)
        results, plans = [], []
        for domain, rcpts in by_domain.items():
            plan, outcome = self._deliver_domain(domain, mail_from, rcpts, data)
            plans.append(plan)
            results += outcome
        order = {r: i for i, r in enumerate(recipients)}
        results.sort(key=lambda r: order[r.recipient])
        for r in results:
            where = f" via {r.address} (IPv{r.family}, {r.host})" if r.address else ""
            self.transcript.add("result", f"{r.recipient}: {r.status}{where}: {r.reason}")
        return Result(results, plans, self.transcript)

    def _plan(self, domain: str) -> Plan:
        plan = resolve_plan(self.resolver, domain, self.options.aware, self.options.mx_port)
        self._log_plan(plan)
        return plan

    def _log_plan(self, plan: Plan) -> None:
        for name, rdtype in plan.lookups:
            self.transcript.add("dns", f"{rdtype} {name}")
        for line in describe(plan, f"{self.options.fallback_code} {self.options.fallback_status}"):
            self.transcript.add("plan", line)

    def _deliver_domain(self, domain: str, mail_from: str, rcpts: list, data: bytes):
        plan = self._plan(domain)
        pending = list(rcpts)
        done: dict = {}
        last = "; ".join(plan.errors) and "temporary DNS failure: " + "; ".join(plan.errors)
        temporary = plan.temporary
        tried: set = set()
        ipv4_only = False

        def run(attempts):
            nonlocal pending, last, temporary, ipv4_only
            for attempt in attempts:
                if not pending:
                    return
                if (ipv4_only and attempt.family == 6) or (attempt.address, attempt.port) in tried:
                    continue
                tried.add((attempt.address, attempt.port))
                outcome = self._attempt(attempt, mail_from, pending, data)
                _record_outcome(done, attempt, outcome)
                pending = [r for r in pending if r not in done]
                if outcome.reason:
                    last, temporary = outcome.reason, True
                if outcome.fallback and not ipv4_only:
                    ipv4_only = True
                    self.transcript.add("note", f"{attempt.host} asks to fall back to IPv4; "
                                        "IPv4 only from here on")

        run(plan.attempts())
        if pending and plan.route == "srv":
            # No IPv4 address of the SRV targets took it: the MX hosts over IPv4.
            fallback = resolve_ipv4_fallback(self.resolver, domain, self.options.mx_port)
            self._log_plan(fallback)
            temporary = temporary or fallback.temporary
            run(fallback.attempts())
        for rcpt in pending:
            if temporary:
                done[rcpt] = RecipientResult(rcpt, DEFERRED, last or "no host took the message")
            else:
                why = {"null-mx": f"{domain} accepts no mail (null MX)"}.get(
                    plan.route, f"no {'IPv4 ' if plan.families == (4,) else ''}address for {domain}")
                done[rcpt] = RecipientResult(rcpt, BOUNCED, why)
        return plan, [done[r] for r in rcpts]

    def _attempt(self, attempt: Attempt, mail_from: str, rcpts: list, data: bytes) -> _Try:
        t = self.transcript
        source = self.options.source_ipv6 if attempt.family == 6 else self.options.source_ipv4
        t.add("connect", f"connects via IPv{attempt.family} to {attempt}"
              + (f" from {source}" if source else ""), address=attempt.address,
              family=attempt.family, port=attempt.port, host=attempt.host)
        try:
            conn = Connection(attempt, self.options, t)
        except OSError as err:
            t.add("note", f"cannot connect: {err}")
            return _Try(reason=f"cannot connect to {attempt}: {err}")
        try:
            return self._converse(conn, attempt, mail_from, rcpts, data)
        except ProtocolError as err:
            t.add("note", str(err))
            conn.close()
            return _Try(reason=f"{attempt}: {err}")

    def _converse(self, conn: Connection, attempt, mail_from, rcpts, data) -> _Try:
        where = str(attempt)
        extensions, refused = self._greet(conn, where)
        if refused is not None:
            return refused
        reply = conn.command(f"MAIL FROM:<{mail_from}>{_mail_parameters(extensions, data)}")
        if reply.code != 250:
            return self._refused(conn, reply, rcpts, where, "MAIL FROM")
        outcome = _Try()
        accepted, abandoned = self._recipients(conn, rcpts, where, outcome)
        if abandoned is not None:
            return abandoned
        if not accepted:
            conn.quit()
            return outcome
        return self._send_message(conn, data, accepted, where, outcome)

    def _greet(self, conn: Connection, where: str) -> tuple[set, _Try | None]:
        """The greeting, then EHLO (HELO if refused): the server's extensions, or why not."""
        greeting = conn.reply()
        if greeting.code != 220:
            conn.quit()
            return set(), _Try(reason=f"{where} greeted with {greeting}")
        helo = self.options.helo or socket.getfqdn()
        reply = conn.command(f"EHLO {helo}")
        extensions = {line.split(" ", 1)[0].upper() for line in reply.lines[1:]} \
            if reply.code == 250 else set()
        if reply.code != 250:
            reply = conn.command(f"HELO {helo}")
            if reply.code != 250:
                conn.quit()
                return set(), _Try(reason=f"{where} refused HELO: {reply}")
        return extensions, None

    def _recipients(self, conn: Connection, rcpts, where: str,
                    outcome: _Try) -> tuple[list, _Try | None]:
        """RCPT TO for each recipient: those accepted, bounces and deferrals noted in OUTCOME;
        or, when one is answered with the fallback reply, the abandoned transaction's _Try."""
        accepted = []
        for rcpt in rcpts:
            reply = conn.command(f"RCPT TO:<{rcpt}>")
            if reply.code in (250, 251):
                accepted.append(rcpt)
            elif self.is_fallback(reply):
                # The transaction is abandoned before DATA: nothing was delivered.
                conn.quit()
                return accepted, _Try(fallback=True, reply=str(reply),
                                      reason=f"{where} answered RCPT with fallback {reply}")
            elif reply.code >= 500:
                outcome.bounced[rcpt] = f"{where} said {reply}"
            else:
                outcome.reason = f"{where} answered RCPT with {reply}"
        return accepted, None

    def _send_message(self, conn: Connection, data, accepted: list, where: str,
                      outcome: _Try) -> _Try:
        """DATA, the message, and what the final reply did to the ACCEPTED recipients."""
        reply = conn.command("DATA")
        if reply.code != 354:
            refused = self._refused(conn, reply, accepted, where, "DATA")
            refused.bounced.update(outcome.bounced)
            refused.reason = refused.reason or outcome.reason
            return refused
        conn.send_data(data)
        try:
            reply = conn.reply(timeout=self.options.data_timeout)
        except ProtocolError as err:
            conn.close()
            outcome.uncertain = accepted
            outcome.uncertain_reason = f"{where}: {err} after the message was sent"
            return outcome
        outcome.reply = str(reply)
        if 200 <= reply.code < 300:
            outcome.delivered = accepted
        elif self.is_fallback(reply):
            outcome.fallback = True
            outcome.reason = f"{where} answered the message with fallback {reply}"
        elif reply.code >= 500:
            outcome.bounced.update({r: f"{where} said {reply}" for r in accepted})
        else:
            outcome.reason = f"{where} answered the message with {reply}"
        conn.quit()
        return outcome

    def _refused(self, conn, reply: ServerReply, rcpts: list, where: str, stage: str) -> _Try:
        conn.quit()
        if self.is_fallback(reply):
            return _Try(fallback=True, reason=f"{where} answered {stage} with fallback {reply}",
                        reply=str(reply))
        if reply.code >= 500:
            return _Try(bounced={r: f"{where} said {reply}" for r in rcpts}, reply=str(reply))
        return _Try(reason=f"{where} answered {stage} with {reply}", reply=str(reply))


def check_bind_address(text: str | None, version: int) -> str | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadSendOption(f"{text!r}: not an IP address") from None
    if address.version != version:
        raise BadSendOption(f"{text!r}: not an IPv{version} address")
    return str(address)
