"""Postfix's socketmap protocol for ``mx6ctl transport-map``: which domains go to MX6.

Postfix asks ``NAME SP KEY`` as a netstring (``LEN:DATA,``) and takes one
netstring back: ``OK SP DATA``, ``NOTFOUND SP``, ``TEMP SP REASON`` or
``PERM SP REASON`` (socketmap_table(5)). As a transport map the key is the
recipient address (and ``*``). A domain that
publishes ``SRV _mx6._tcp`` with a real target gets the configured transport
(``mx6:``, the pipe(8) service that runs ``mx6ctl send``) for any address at
that domain; every other key is NOTFOUND, so Postfix's own smtp client delivers it; a lookup that failed is
TEMP, so Postfix defers the message instead of guessing a route.

The codec is pure; ``answer`` asks the one resolver (its cache honours the TTL).
"""
from __future__ import annotations

from ..dns import DnsTempError
from .plan import SRV_PREFIX, BadName, normalize_domain

MAX_REQUEST = 1100          # "NAME " and a key: an address is at most 254 octets, a name 253
_MAX_DIGITS = len(str(MAX_REQUEST))


class NetstringError(ValueError):
    """Not a netstring, or a longer one than a socketmap request can be."""


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def parse_netstring(buffer: bytes, limit: int = MAX_REQUEST) -> tuple[bytes, bytes] | None:
    """(payload, the rest of buffer) for a complete netstring at the start of buffer,
    None while more bytes are needed; NetstringError when it can never be one."""
    colon = buffer.find(b":", 0, _MAX_DIGITS + 1)
    if colon < 0:
        if len(buffer) > _MAX_DIGITS or (buffer and not buffer.isdigit()):
            raise NetstringError("no length prefix")
        return None
    digits = buffer[:colon]
    if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
        raise NetstringError("bad length prefix")
    length = int(digits)
    if length > limit:
        raise NetstringError(f"netstring of {length} bytes, over {limit}")
    end = colon + 1 + length
    if len(buffer) <= end:
        return None
    if buffer[end:end + 1] != b",":
        raise NetstringError("netstring not terminated by a comma")
    return buffer[colon + 1:end], buffer[end + 1:]


def answer(resolver, request: bytes, map_name: str, transport: str) -> bytes:
    """The reply payload for one request (not yet a netstring)."""
    name, space, key = request.partition(b" ")
    if not space or name.decode("ascii", "replace") != map_name:
        return b"PERM unknown map name"
    # Postfix asks a socketmap (a "pattern" table to it) for the whole address only,
    # never for the domain alone; its other lookups ("*", a parent ".domain") are NOTFOUND.
    text = key.decode("utf-8", "replace").strip().rpartition("@")[2]
    if not text or text.startswith(".") or text == "*":
        return b"NOTFOUND "
    try:
        domain = normalize_domain(text)
    except BadName:
        return b"NOTFOUND "
    try:
        records = resolver.query(SRV_PREFIX + domain, "SRV")
    except DnsTempError as err:
        return b"TEMP " + str(err).encode("utf-8", "replace")[:200]
    if any(str(getattr(r, "target", ".")) not in ("", ".") for r in records):
        return b"OK " + transport.encode("ascii")
    return b"NOTFOUND "
