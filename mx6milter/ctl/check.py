"""mx6ctl check: can the milter serve? A monitoring plugin (Nagios, Icinga, Checkmk).

Three probes, one line each, the worst first: Redis (it answers; the schema
version it records), DNS (the configured servers answer a query) and the milter
socket (a real milter negotiation, SMFIC_OPTNEG, as the MTA starts every
session). Exit status as monitoring plugins have it: 0 OK, 1 WARNING, 2 CRITICAL.
"""
from __future__ import annotations

import argparse
import socket
import struct
import time
from dataclasses import dataclass

from ..config import Config, SocketSpec, redact_url
from ..dns import DnsTempError, Resolver
from ..service import DNS_PROBE, open_store
from ..store import SCHEMA_VERSION, StoreUnavailable
from .common import load

OK, WARNING, CRITICAL = 0, 1, 2
STATES = ("OK", "WARNING", "CRITICAL")

# The milter protocol (libmilter's mfdef.h): a packet is a 4-byte length, a command, data.
MILTER_VERSION = 6
ALL_ACTIONS = 0x1FF          # SMFIF_*: every modification an MTA may allow
ALL_STEPS = 0x1FFFFF         # SMFIP_*: every protocol step an MTA may offer to skip
MAX_REPLY = 64 * 1024


@dataclass(frozen=True)
class Probe:
    name: str
    state: int
    text: str
    seconds: float | None = None

    def line(self) -> str:
        perf = f" | time={self.seconds:.6f}s" if self.seconds is not None else ""
        return f"{self.name} {STATES[self.state]} - {self.text}{perf}"


def probe_redis(config: Config) -> Probe:
    where = redact_url(config.redis.url)
    started = time.monotonic()
    try:
        found = open_store(config).read_schema()
    except StoreUnavailable as err:
        return Probe("REDIS", CRITICAL, f"{where} does not answer: {err}")
    seconds = time.monotonic() - started
    if found is None:
        return Probe("REDIS", WARNING, f"{where} answers, but holds no schema marker under "
                     f"key_prefix {config.redis.key_prefix!r}: no mx6milter has started with "
                     "this Redis and prefix yet", seconds)
    if found > SCHEMA_VERSION:
        return Probe("REDIS", WARNING, f"{where} holds schema {found}, this mx6milter reads "
                     f"{SCHEMA_VERSION}: entries of the newer version are not seen", seconds)
    return Probe("REDIS", OK, f"{where} answers, schema {found}", seconds)


def probe_dns(config: Config, name: str) -> Probe:
    resolver = Resolver.from_config(config.dns)
    started = time.monotonic()
    try:
        resolver.query(name, DNS_PROBE[1])
    except DnsTempError as err:
        return Probe("DNS", CRITICAL, str(err))
    return Probe("DNS", OK, f"{name}/{DNS_PROBE[1]} answered", time.monotonic() - started)


def probe_milter(spec: SocketSpec, timeout: float) -> Probe:
    started = time.monotonic()
    try:
        version, actions, steps = negotiate(spec, timeout)
    except (OSError, ValueError) as err:
        return Probe("MILTER", CRITICAL, f"{spec}: {err}")
    return Probe("MILTER", OK, f"{spec} negotiated (protocol version {version}, actions "
                 f"0x{actions:x}, steps 0x{steps:x})", time.monotonic() - started)


def negotiate(spec: SocketSpec, timeout: float) -> tuple:
    """Connect to the milter, offer SMFIC_OPTNEG as an MTA does, read its answer, quit.
    Returns (version, actions, steps) of the answer; raises OSError or ValueError."""
    if spec.is_unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple = spec.path
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in spec.host else socket.AF_INET,
                             socket.SOCK_STREAM)
        address = (spec.host, spec.port)
    with sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(_packet(b"O", struct.pack("!III", MILTER_VERSION, ALL_ACTIONS, ALL_STEPS)))
        command, data = _read_packet(sock)
        if command != b"O" or len(data) < 12:
            raise ValueError(f"answered {command!r} ({len(data)} bytes) to the option "
                             "negotiation: not a milter?")
        sock.sendall(_packet(b"Q", b""))
        return struct.unpack("!III", data[:12])


def _packet(command: bytes, data: bytes) -> bytes:
    return struct.pack("!I", len(command) + len(data)) + command + data


def _read_packet(sock: socket.socket) -> tuple:
    size = struct.unpack("!I", _read_exactly(sock, 4))[0]
    if not 1 <= size <= MAX_REPLY:
        raise ValueError(f"answered a packet of {size} bytes: not a milter?")
    body = _read_exactly(sock, size)
    return body[:1], body[1:]


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ValueError("closed the connection during the option negotiation")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def cmd_check(args) -> int:
    config = load(args)
    probes = [probe_redis(config), probe_dns(config, args.dns_name or DNS_PROBE[0]),
              probe_milter(config.milter.socket, args.timeout)]
    for probe in sorted(probes, key=lambda p: -p.state):   # the worst first: the status line
        print(probe.line())
    return max(p.state for p in probes)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, more than 0, at most 600")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="probe Redis, DNS and the milter socket (a monitoring plugin)",
        description="Probe Redis (and its schema version), DNS and the milter socket (a real "
                    "milter option negotiation). One line per probe, the worst first; exit 0 "
                    "OK, 1 WARNING, 2 CRITICAL, as monitoring plugins do.",
        examples=("mx6ctl check", "mx6ctl check --timeout 10 --dns-name example.org"))
    p.add_argument("--dns-name", metavar="NAME", default="",
                   help=f"the name to look up ({DNS_PROBE[1]} record; default {DNS_PROBE[0]}, "
                        "as the daemon's start-up check); any answer, NXDOMAIN included, is OK")
    p.add_argument("--timeout", type=_seconds, default=5.0, metavar="SECONDS",
                   help="for the milter's answer (default 5)")
    p.set_defaults(func=cmd_check)
