"""Plain data passed between the milter, the evidence gatherers and the policy."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .membudget import Reservation


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
    # client_ip parsed (policy.client_address), with the text it was parsed from: the
    # milter classifies the session at connect and at MAIL FROM and judges at end of message.
    parsed_client_ip: tuple = field(default=(None, None), repr=False, compare=False)


@dataclass(frozen=True)
class Message:
    """The message as received: raw bytes for DKIM, decoded headers for the rest."""
    headers: tuple = ()              # ((name, value), ...) in arrival order
    raw: bytes = b""
    truncated: bool = False          # body cut at [milter] max_message_size
    over_budget: bool = False        # not kept: [milter] max_buffered_bytes was spent


class MessageBuilder:
    """One message as the MTA hands it over, headers then body chunks, into a Message.

    The milter's callbacks and ``mx6ctl explain`` both build with it, so explain
    judges the bytes the milter would have judged.

    With a RESERVATION (the milter's, from the process's MemoryBudget), every
    byte kept is reserved first; when the budget is spent the builder drops
    what it holds, gives the bytes back and keeps nothing more: its Message is
    then ``over_budget``. The owner calls ``release`` (or ``detach``) when done."""

    def __init__(self, max_size: int, reservation: Reservation | None = None):
        self.max_size = max_size
        self.reservation = reservation
        self.headers: list = []          # (name, decoded value)
        self.raw_headers: list = []      # bytes, CRLF line ends, for DKIM
        self.raw_headers_size = 0
        self.body_chunks: list = []
        self.body_size = 0
        self.truncated = False
        self.over_budget = False

    def _reserve(self, amount: int) -> bool:
        if self.over_budget:
            return False
        if self.reservation is None or self.reservation.grow(amount):
            return True
        self._drop()
        return False

    def _drop(self) -> None:
        """Over budget: keep nothing, give everything back."""
        self.over_budget = True
        self.release()

    def add_header(self, name: str, value: bytes) -> None:
        """VALUE as the MTA passes it: after the colon, leading space kept, folded
        lines joined by LF or CRLF."""
        # Kept twice: decoded and raw (the raw one with CRLF and the name).
        if not self._reserve(2 * (len(name) + len(value) + 3)):
            return
        self.headers.append((name, value.decode("utf-8", "surrogateescape").strip()))
        value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        raw = name.encode("ascii", "replace") + b":" + value + b"\r\n"
        self.raw_headers.append(raw)
        self.raw_headers_size += len(raw)

    def add_body(self, chunk: bytes) -> None:
        """Body bytes up to max_size; the rest is dropped and the message marked truncated."""
        if self.truncated or self.over_budget:
            return
        if self.body_size + len(chunk) > self.max_size:
            self.truncated = True
        elif self._reserve(len(chunk)):
            self.body_chunks.append(chunk)
            self.body_size += len(chunk)

    @property
    def size(self) -> int:
        """The size of the raw message build() makes."""
        return self.raw_headers_size + 2 + self.body_size

    def build(self, copies: int = 1, keep: int | None = None) -> Message:
        """The Message, its raw bytes joined once; call once: the parts are dropped.

        With a reservation, COPIES times the message's size is reserved first
        (building holds the parts and the joined bytes at once: 2; judging it
        holds membudget.JUDGING_COPIES), then KEEP times it is kept (default:
        COPIES). If that cannot be reserved, the Message is ``over_budget``."""
        size = self.size
        if self.reservation is not None and not self.over_budget \
                and not self.reservation.ensure(copies * size):
            self._drop()
        if self.over_budget:
            return Message(truncated=self.truncated, over_budget=True)
        raw = b"".join([*self.raw_headers, b"\r\n", *self.body_chunks])
        self.raw_headers, self.body_chunks = [], []
        if self.reservation is not None and keep is not None:
            self.reservation.shrink_to(keep * size)
        return Message(headers=tuple(self.headers), raw=raw, truncated=self.truncated)

    def detach(self) -> Reservation | None:
        """Hand the reservation to whoever keeps the built Message now."""
        reservation, self.reservation = self.reservation, None
        return reservation

    def release(self) -> None:
        """Drop every part and give the reserved bytes back (again: no effect)."""
        self.headers, self.raw_headers, self.body_chunks = [], [], []
        if self.reservation is not None:
            self.reservation.release()


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
