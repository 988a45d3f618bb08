"""A small client of the milter protocol (version 6), as an MTA speaks it.

Enough of the protocol to drive any milter the way Postfix does: option
negotiation (honouring the milter's "no reply" and "skip stage" flags),
macros, connect, HELO, MAIL, RCPT, headers, body, end of message. It times
each message's *verdict*: from the last packet the MTA sends to the milter's
final answer, which for a judged message is the decision at end of message.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field

# Protocol step flags (libmilter's mfapi.h).
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
NR_HDR, NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x80, 0x1000, 0x2000, 0x4000, 0x8000
NR_EOH, NR_BODY, HDR_LEADSPC = 0x40000, 0x80000, 0x100000
ALL_ACTIONS = 0x1FF
ALL_STEPS = 0x1FFFFF
FINAL = {b"a": "accept", b"r": "reject", b"t": "tempfail", b"d": "discard", b"y": "reply"}


class MilterError(Exception):
    pass


@dataclass
class Envelope:
    client_ip: str
    helo: str
    mail_from: str
    rcpts: tuple
    message: bytes          # CRLF
    queue_id: str = "BENCH"
    kind: str = ""


@dataclass
class Verdict:
    kind: str
    action: str             # accept / reject / tempfail / discard / reply / continue
    reply: bytes = b""
    latency: float = 0.0    # seconds, last MTA packet -> final answer
    edits: list = field(default_factory=list)


def split_message(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += b"\r\n" + line
        elif line:
            name, _, value = line.partition(b":")
            headers.append([name, value])
    return headers, body


def _packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd + data


class Connection:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.steps = 0

    @classmethod
    async def open(cls, address: str) -> Connection:
        """address: 'unix:/path' or 'inet:PORT@HOST'."""
        if address.startswith("unix:"):
            reader, writer = await asyncio.open_unix_connection(address[5:])
        else:
            port, _, host = address.split(":", 1)[1].partition("@")
            reader, writer = await asyncio.open_connection(host.strip("[]") or "127.0.0.1",
                                                           int(port))
            # Postfix sets no TCP_NODELAY on its milter sockets; neither do we.
        return cls(reader, writer)

    async def read(self) -> tuple:
        header = await self.reader.readexactly(4)
        (length,) = struct.unpack("!I", header)
        data = await self.reader.readexactly(length)
        return data[:1], data[1:]

    async def negotiate(self) -> None:
        self.writer.write(_packet(b"O", struct.pack("!III", 6, ALL_ACTIONS, ALL_STEPS)))
        cmd, data = await self.read()
        if cmd != b"O" or len(data) < 12:
            raise MilterError(f"bad negotiation reply {cmd!r}")
        _version, _actions, self.steps = struct.unpack("!III", data[:12])

    async def step(self, cmd: bytes, data: bytes, skip_flag: int, noreply_flag: int):
        """Send one stage; the answer's (cmd, data), or None when none is due."""
        if self.steps & skip_flag:
            return None
        self.writer.write(_packet(cmd, data))
        if self.steps & noreply_flag:
            return None
        await self.writer.drain()
        return await self.read()

    async def close(self) -> None:
        try:
            self.writer.write(_packet(b"Q"))
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def _macros(stage: bytes, values: dict) -> bytes:
    data = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in values.items())
    return _packet(b"D", stage + data)


async def send_one(address: str, env: Envelope) -> Verdict:
    """One connection, one message, like an SMTP session with one transaction."""
    conn = await Connection.open(address)
    try:
        return await _session(conn, env)
    finally:
        await conn.close()


async def _session(conn: Connection, env: Envelope) -> Verdict:
    await conn.negotiate()
    v = await _envelope(conn, env)
    if v:
        return v
    v = await _content(conn, env)
    if v:
        return v
    return await _end_of_message(conn, env)


def _verdict(env: Envelope, answer, started: float) -> Verdict | None:
    """The milter's final answer to a stage as a Verdict, timed from STARTED; None to go on."""
    if answer is None or answer[0] in (b"c", b"s"):
        return None
    if answer[0] in FINAL:
        return Verdict(env.kind, FINAL[answer[0]], answer[1], time.perf_counter() - started)
    raise MilterError(f"unexpected answer {answer[0]!r}")


async def _timed_step(conn: Connection, env: Envelope, cmd: bytes, data: bytes, skip: int,
                      noreply: int) -> Verdict | None:
    """One stage, timed from just before it is sent."""
    started = time.perf_counter()
    return _verdict(env, await conn.step(cmd, data, skip, noreply), started)


async def _envelope(conn: Connection, env: Envelope) -> Verdict | None:
    """Connect, HELO, MAIL FROM and each RCPT TO."""
    family = b"6" if ":" in env.client_ip else b"4"
    conn.writer.write(_macros(b"C", {"j": "mx.example.org", "{daemon_name}": "smtpd",
                                     "{client_addr}": env.client_ip}))
    v = await _timed_step(conn, env, b"C", b"client.example\0" + family + struct.pack("!H", 25)
                          + env.client_ip.encode() + b"\0", NOCONNECT, NR_CONN)
    if v:
        return v
    v = await _timed_step(conn, env, b"H", env.helo.encode() + b"\0", NOHELO, NR_HELO)
    if v:
        return v
    conn.writer.write(_macros(b"M", {"i": env.queue_id}))
    v = await _timed_step(conn, env, b"M", f"<{env.mail_from}>".encode() + b"\0", NOMAIL, NR_MAIL)
    if v:
        return v
    for rcpt in env.rcpts:
        v = await _timed_step(conn, env, b"R", f"<{rcpt}>".encode() + b"\0", NORCPT, NR_RCPT)
        if v:
            return v
    return None


async def _content(conn: Connection, env: Envelope) -> Verdict | None:
    """The header fields, their end, and the body in chunks."""
    headers, body = split_message(env.message)
    leading = conn.steps & HDR_LEADSPC
    for name, value in headers:
        if not leading:
            value = value.lstrip(b" ")
        v = await _timed_step(conn, env, b"L", name + b"\0" + value + b"\0", NOHDRS, NR_HDR)
        if v:
            return v
    v = await _timed_step(conn, env, b"N", b"", NOEOH, NR_EOH)
    if v:
        return v
    for start in range(0, len(body), 65535):
        started = time.perf_counter()
        answer = await conn.step(b"B", body[start:start + 65535], NOBODY, NR_BODY)
        if answer is not None and answer[0] == b"s":
            break
        v = _verdict(env, answer, started)
        if v:
            return v
    return None


async def _end_of_message(conn: Connection, env: Envelope) -> Verdict:
    """End of message: the final answer, with the modifications that came before it."""
    conn.writer.write(_packet(b"E"))
    await conn.writer.drain()
    started = time.perf_counter()
    edits = []
    while True:
        cmd, data = await conn.read()
        if cmd in FINAL or cmd == b"c":
            # 'c' at end of message means accept (as Postfix reads it).
            return Verdict(env.kind, FINAL.get(cmd, "accept"), data,
                           time.perf_counter() - started, edits)
        if cmd != b"p":
            edits.append((cmd, data))


@dataclass
class LoadResult:
    verdicts: list
    seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return len(self.verdicts) / self.seconds if self.seconds else 0.0

    def latencies(self, kinds=None) -> list:
        return sorted(v.latency for v in self.verdicts if kinds is None or v.kind in kinds)


async def _load(address: str, envelopes: list, sessions: int, rate: float | None) -> LoadResult:
    queue = list(reversed(envelopes))
    verdicts, errors = [], [0]
    loop = asyncio.get_running_loop()
    slot = [0.0]

    async def worker():
        while queue:
            env = queue.pop()
            if rate:                  # open loop: message i starts at i / rate
                due, slot[0] = started + slot[0], slot[0] + 1 / rate
                await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                verdicts.append(await send_one(address, env))
            except (MilterError, OSError, asyncio.IncompleteReadError):
                errors[0] += 1

    started = loop.time()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return LoadResult(verdicts, time.perf_counter() - began, errors[0])


def run_load(address: str, envelopes: list, sessions: int, rate: float | None = None) -> LoadResult:
    """Send every envelope through SESSIONS concurrent milter connections, as fast
    as they go, or (RATE) starting one message every 1/RATE seconds."""
    return asyncio.run(_load(address, envelopes, sessions, rate))


def percentile(sorted_values: list, fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def wait_for_socket(address: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if address.startswith("unix:"):
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(address[5:])
            else:
                port, _, host = address.split(":", 1)[1].partition("@")
                socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no milter answering on {address}")
