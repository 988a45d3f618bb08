"""The e-mail addresses in a vCard file (RFC 6350; also 3.0 and 2.1 as exported
by address books). Pure: decoded lines in, events out, no validation of the
addresses themselves (the caller normalises them).

Only what an addressbook import needs: BEGIN/END nesting, folded lines, an
optional group prefix (``item1.EMAIL``), parameters, quoted-printable values
(2.1) and backslash escapes. Addresses are released at each ``END:VCARD``, so
a truncated file (a card without END) contributes an error, not half a card.
"""
from __future__ import annotations

import quopri
import re

_PROPERTY = re.compile(r'(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)((?:;(?:[^:"]|"[^"]*")*)?):(.*)',
                       re.DOTALL)
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "N": "\n"}


def unfold(lines):
    """(number, logical line) from (number, physical line); continuation lines
    start with a space or tab, quoted-printable values continue after a '='."""
    current, start = None, 0
    for number, line in lines:
        line = line.rstrip("\r\n")
        if current is not None and line[:1] in (" ", "\t"):
            current += line[1:]
            continue
        if current is not None and current.endswith("=") and _is_quoted_printable(current):
            current = current[:-1] + line
            continue
        if current is not None:
            yield start, current
        current, start = line, number
    if current is not None:
        yield start, current


def _is_quoted_printable(line: str) -> bool:
    """Whether the line's parameters (not its value) declare quoted-printable."""
    match = _PROPERTY.fullmatch(line)
    return match is not None and "QUOTED-PRINTABLE" in match.group(2).upper()


def _decode_value(params: str, value: str) -> str:
    upper = params.upper()
    if "QUOTED-PRINTABLE" in upper:
        charset = re.search(r"CHARSET=([A-Za-z0-9_-]+)", params, re.IGNORECASE)
        try:
            value = quopri.decodestring(value.encode("utf-8")).decode(
                charset.group(1) if charset else "utf-8")
        except (LookupError, UnicodeDecodeError, ValueError):
            pass   # left as it was; the address check rejects it if it is garbage
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(1)), value)


def _email_events(number: int, params: str, value: str) -> list:
    """An EMAIL property's address as an ("email", number, address) event, if not empty."""
    address = _decode_value(params, value).strip()
    if address.lower().startswith("mailto:"):
        address = address[7:]
    return [("email", number, address)] if address else []


def emails(lines):
    """Events from (number, line) pairs: ("email", number, address) for each
    EMAIL of a complete card, ("error", number, message) for what cannot be used."""
    depth, card_start, pending = 0, 0, []
    for number, line in unfold(lines):
        if not line.strip():
            continue
        match = _PROPERTY.fullmatch(line)
        if not match:
            yield "error", number, "not a vCard property line (NAME:VALUE)"
            continue
        name, params, value = match.group(1).upper(), match.group(2), match.group(3)
        if name == "BEGIN" and value.strip().upper() == "VCARD":
            depth += 1
            if depth == 1:
                card_start, pending = number, []
            continue
        if name == "END" and value.strip().upper() == "VCARD":
            if depth == 0:
                yield "error", number, "END:VCARD without BEGIN:VCARD"
                continue
            depth -= 1
            if depth == 0:
                yield from pending     # the next BEGIN:VCARD starts a new list
            continue
        if depth == 0:
            yield "error", number, "outside BEGIN:VCARD ... END:VCARD"
            continue
        if name == "EMAIL" and depth == 1:   # not the addresses of an embedded AGENT card
            pending.extend(_email_events(number, params, value))
    if depth:
        yield "error", card_start, ("BEGIN:VCARD without END:VCARD (truncated file?): "
                                    "its addresses are not used")
