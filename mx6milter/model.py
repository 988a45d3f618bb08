"""Plain data passed between the milter, the evidence gatherers and the policy."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SessionClass(enum.Enum):
    IPV4 = "ipv4"                    # includes IPv4-mapped IPv6 (::ffff:a.b.c.d)
    IPV6 = "ipv6"                    # the only class that is judged
    AUTHENTICATED = "authenticated"  # SMTP AUTH submission
    TRUSTED = "trusted"              # inside [policy] trusted_networks
    LOCAL = "local"                  # no IP address (local pipe, unix socket)


class Tier(enum.Enum):
    BYPASS = "bypass"
    WHITELISTED = "whitelisted"
    GREENLISTED = "greenlisted"
    NONE = "none"


class Action(enum.Enum):
    ACCEPT = "accept"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


@dataclass
class Session:
    """What the MTA told us about one SMTP transaction."""
    client_ip: str | None = None
    client_name: str = ""
    helo: str = ""
    mail_from: str = ""              # without angle brackets; "" is the null sender
    recipients: list = field(default_factory=list)
    auth_authen: str = ""
    queue_id: str = ""
    daemon_name: str = ""
    daemon_addr: str = ""


@dataclass(frozen=True)
class Message:
    """The message as received: raw bytes for DKIM, decoded headers for the rest."""
    headers: tuple = ()              # ((name, value), ...) in arrival order
    raw: bytes = b""
    truncated: bool = False          # body cut at [milter] max_message_size


class MessageBuilder:
    """One message as the MTA hands it over, headers then body chunks, into a Message.

    The milter's callbacks and ``mx6ctl explain`` both build with it, so explain
    judges the bytes the milter would have judged."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.headers: list = []          # (name, decoded value)
        self.raw_headers: list = []      # bytes, CRLF line ends, for DKIM
        self.body_chunks: list = []
        self.body_size = 0
        self.truncated = False

    def add_header(self, name: str, value: bytes) -> None:
        """VALUE as the MTA passes it: after the colon, leading space kept, folded
        lines joined by LF or CRLF."""
        self.headers.append((name, value.decode("utf-8", "surrogateescape").strip()))
        value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.raw_headers.append(name.encode("ascii", "replace") + b":" + value + b"\r\n")

    def add_body(self, chunk: bytes) -> None:
        """Body bytes up to max_size; the rest is dropped and the message marked truncated."""
        if self.truncated:
            return
        if self.body_size + len(chunk) > self.max_size:
            self.truncated = True
        else:
            self.body_chunks.append(chunk)
            self.body_size += len(chunk)

    def build(self) -> Message:
        return Message(headers=tuple(self.headers),
                       raw=b"".join(self.raw_headers) + b"\r\n" + b"".join(self.body_chunks),
                       truncated=self.truncated)


@dataclass(frozen=True)
class Finding:
    """One piece of evidence and what it showed.

    ``kind`` names the check ("ip", "spf", "dkim", ...), ``result`` its outcome
    ("pass", "miss", "fail", ...), ``detail`` the thing looked at.
    """
    kind: str
    result: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}={self.result}" + (f"({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Findings:
    """What one evidence source returns: every check it made, and those that count."""
    checks: tuple = ()               # every Finding, hits and misses
    evidence: tuple = ()             # the Findings that speak for the message

    def __add__(self, other: Findings) -> Findings:
        return Findings(self.checks + other.checks, self.evidence + other.evidence)


@dataclass(frozen=True)
class Evidence:
    session_class: SessionClass
    whitelist: tuple = ()            # Findings that make the message whitelisted
    greenlist: tuple = ()            # Findings that make it greenlisted
    checks: tuple = ()               # every Finding, hits and misses, for logs and explain
    failures: tuple = ()             # reasons evidence is missing: "redis-unavailable", ...
    auth_results: str = ""           # the Authentication-Results value we would add
    authenticated: bool = False      # an SPF or DKIM pass: picks the fallback's status code


@dataclass(frozen=True)
class Reply:
    code: str
    status: str
    lines: tuple

    def as_smtp(self) -> str:
        """The reply as the SMTP client sees it, for logs, explain and tests."""
        lines = [line.replace("%%", "%") for line in self.lines] or [""]
        out = [f"{self.code}-{self.status} {line}" for line in lines[:-1]]
        out.append(f"{self.code} {self.status} {lines[-1]}")
        return "\r\n".join(out)


@dataclass(frozen=True)
class Decision:
    tier: Tier
    action: Action
    reasons: tuple = ()
    reply: Reply | None = None       # set when the action is not ACCEPT
    header: str | None = None        # verdict header value to add, if any
    would_reply: Reply | None = None  # report mode: what would have been answered
