"""Whitelist entries as operators write them: checked, normalised, and turned
into the (key suffix, field, value) triples of store.py -- and back again.

Pure: no Redis, no files, no clock (``now`` is passed in). mx6ctl's single
entry verbs, ``import`` and ``export`` all go through here, so a line that
``export`` writes is a line ``import`` reads.

Line format, one entry a line, ``#`` starts a comment (at the start of a line
or after white space), options are ``key=value``::

    2001:db8:1::/48 expires=2027-01-01
    partner.example require=dkim
    user@example.org friend@partner.example expires=90d
"""
from __future__ import annotations

import datetime
import ipaddress
import re
import socket
from dataclasses import dataclass

from .addresses import AddressError, domain_to_ascii, normalise_address
from .prefixes import ip_field

REQUIREMENTS = ("dmarc", "dkim", "spf", "any")   # what a domain entry asks to authenticate
DEFAULT_REQUIREMENT = "dmarc"      # the From domain authenticated in alignment
MIN_PREFIX_LENGTH = 16      # shorter prefixes cover whole registries: surely a typo
MAX_LINE = 4096
HASHED = re.compile(r"hmac:([0-9a-f]{32})")
_DURATION = re.compile(r"\+?([0-9]+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_COMMENT = re.compile(r"(?:^|(?<=\s))#")


class EntryError(ValueError):
    """An entry that cannot be stored, with the reason in words."""


# --- names, prefixes, domains, addresses --------------------------------------------


# Source names become part of Redis key names: no ':' (the key separator), no '~'
# (staging keys of a replace), and none of the names the key schema (store.py)
# gives other keys under <p>KIND: ("sources" is the set of a kind's source names).
SOURCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RESERVED_SOURCES = frozenset({"sources"})


def check_source(name: str) -> str:
    """The one check of a source name, for mx6ctl's --source and Store.load."""
    if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
        raise EntryError(f"{name!r}: a source name is 1 to 64 of the characters A-Z a-z 0-9 _ . - "
                         "(it becomes part of Redis key names)")
    if name in RESERVED_SOURCES:
        raise EntryError(f"{name!r}: a reserved name (the key schema uses it); choose another "
                         "source name")
    return name


def parse_ipv6_prefix(text: str) -> ipaddress.IPv6Network:
    text = text.strip()
    if "%" in text:
        raise EntryError(f"{text!r}: a zone index (%...) has no meaning in a whitelist")
    network = _fast_prefix(text)
    if network is not None:
        return network
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        loose = _loose_network(text)
        if loose is not None and loose.version == 6:
            raise EntryError(f"{text!r}: host bits set after the prefix length; "
                             f"the prefix is {loose}") from None
        if loose is None:
            raise EntryError(f"{text!r}: not an IPv6 address or prefix ({err})") from None
        network = loose
    if network.version != 6:
        raise EntryError(f"{text!r}: an IPv4 address or prefix; the whitelist takes IPv6 only "
                         "(IPv4 mail is never judged)")
    if network.network_address.ipv4_mapped is not None:
        raise EntryError(f"{text!r}: an IPv4-mapped address; those sessions count as IPv4 "
                         "and are never judged")
    if network.prefixlen < MIN_PREFIX_LENGTH:
        raise EntryError(f"{text!r}: a /{network.prefixlen} covers too much; the shortest "
                         f"prefix accepted is /{MIN_PREFIX_LENGTH}")
    return network


def _fast_prefix(text: str):
    """The common case (a valid IPv6 prefix) four times faster than ipaddress,
    for million-line imports; None sends anything unusual to the full checks."""
    address, _slash, length = text.partition("/")
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
    except (OSError, ValueError):
        return None
    if _slash and not (length.isascii() and length.isdigit() and len(length) <= 3):
        return None
    bits = int(length) if length else 128
    if not MIN_PREFIX_LENGTH <= bits <= 128 or value & ((1 << (128 - bits)) - 1) \
            or value >> 32 == 0xFFFF:
        return None
    return ipaddress.IPv6Network((value, bits))


def _loose_network(text: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def parse_domain(text: str, is_public) -> tuple:
    """(A-label domain, note); the note says what was normalised, "" if nothing.

    A trailing dot and Unicode (U-label) input are accepted and normalised,
    with a note, because that is what the milter compares against.
    ``is_public(domain)`` tells public suffixes, which are refused.
    """
    raw = text.strip()
    if "@" in raw:
        raise EntryError(f"{raw!r}: a mail address; the domain whitelist takes domains")
    if raw.startswith("*."):
        raise EntryError(f"{raw!r}: no wildcards; an entry covers its subdomains already, "
                         f"write {raw[2:]!r}")
    try:
        domain = domain_to_ascii(raw)
    except AddressError as err:
        raise EntryError(str(err)) from None
    if "." not in domain or is_public(domain):
        raise EntryError(f"{raw!r}: a public suffix or top-level domain; an entry covers every "
                         "domain below it")
    changes = []
    if raw.endswith("."):
        changes.append("trailing dot removed")
    if not raw.isascii():
        changes.append("Unicode converted to its A-label form")
    note = f"{raw!r} stored as {domain!r} ({', '.join(changes)})" if changes else ""
    return domain, note


class AddressIds:
    """Addresses as the milter looks them up: normalised, then maybe keyed-hashed.

    ``store_id`` is Store.addressbook_id. In privacy mode (a secret is set)
    ``hmac:HEX`` is also accepted, the form ``list`` and ``export`` show.
    """

    def __init__(self, store_id, fold_local_part: bool, private: bool):
        self.store_id = store_id
        self.fold = fold_local_part
        self.private = private

    def __call__(self, text: str) -> str:
        text = text.strip()
        hashed = HASHED.fullmatch(text)
        if hashed:
            if not self.private:
                raise EntryError(f"{text!r}: a hashed address, but no [addressbook] secret_file "
                                 "is configured")
            return hashed.group(1)
        if not text.isprintable():   # undecodable bytes arrive as lone surrogates: not printable
            raise EntryError(f"{text!r}: control characters or bytes that are not UTF-8")
        try:
            return self.store_id(normalise_address(text, self.fold))
        except AddressError as err:
            raise EntryError(str(err)) from None

    def show(self, stored: str) -> str:
        return f"hmac:{stored}" if self.private else stored


# --- expiry ---------------------------------------------------------------------------


def duration_seconds(text: str) -> int:
    """'90d', '12h', '2w', '30m', '45s' in seconds; raises EntryError otherwise."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise EntryError(f"{text!r}: expected a duration such as 24h, 7d or 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_expiry(text: str, now: float) -> int:
    """'never'/'0', Unix seconds, a duration ('90d', '12h', '2w') or an ISO date/time (UTC)."""
    text = text.strip()
    if text in ("", "0", "never"):
        return 0
    if text.isascii() and text.isdigit():     # not "²", a digit int() cannot read
        epoch = int(text)
    elif _DURATION.fullmatch(text):
        epoch = int(now) + duration_seconds(text)
    else:
        try:
            when = datetime.datetime.fromisoformat(text)   # reads a trailing Z as UTC
        except ValueError:
            raise EntryError(f"expires={text!r}: expected never, Unix seconds, a duration such as "
                             "90d or 12h, or a date such as 2027-01-31") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        epoch = int(when.timestamp())
    if epoch <= now:
        raise EntryError(f"expires={text!r}: already in the past")
    if epoch >= 2 ** 40:
        raise EntryError(f"expires={text!r}: too far in the future")
    return epoch


def format_expiry(epoch: int) -> str:
    if not epoch:
        return "never"
    if epoch < 0:
        return "unreadable"
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- values in Redis --------------------------------------------------------------------


def ip_value(expires: int) -> str:
    return str(expires)


def domain_value(requirement: str, expires: int) -> str:
    return f"{requirement} {expires}"


def value_requirement(value: str) -> str:
    """What a domain entry ("REQUIREMENT EXPIRY") asks for; unreadable means the default."""
    parts = value.split()
    return parts[0] if len(parts) > 1 and parts[0] in REQUIREMENTS else DEFAULT_REQUIREMENT


def value_expiry(value: str) -> int:
    """Unix seconds, 0 for never; -1 if unreadable (empty too): long expired, so it
    never counts (the milter ignores it, mx6ctl shows it as expired)."""
    try:
        return int(value.rsplit(" ", 1)[-1])
    except ValueError:
        return -1


def check_requirement(text: str) -> str:
    if text not in REQUIREMENTS:
        raise EntryError(f"require={text!r}: expected one of {', '.join(REQUIREMENTS)}")
    return text


# --- lines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    suffix: str
    field: str
    value: str
    note: str = ""

    def triple(self) -> tuple:
        return self.suffix, self.field, self.value


def split_line(line: str) -> tuple:
    """(words, options) of one line; ([], {}) for blank and comment lines."""
    if len(line) > MAX_LINE:
        raise EntryError(f"line longer than {MAX_LINE} characters")
    text = _COMMENT.split(line, 1)[0].strip()
    words, options = [], {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if eq and key.isalpha() and "@" not in word:   # "bounce=x@example.org" is an address
            if key in options:
                raise EntryError(f"{key}= given twice")
            options[key] = value
        else:
            words.append(word)
    return words, options


class LineParser:
    """One kind's line format. ``parse(line)`` gives an Entry, None (blank), or raises."""

    OPTIONS = {"ip": ("expires",), "domain": ("require", "expires"), "ab": ("expires",)}
    WORDS = {"ip": ("PREFIX",), "domain": ("DOMAIN",), "ab": ("RECIPIENT", "SENDER")}

    def __init__(self, kind: str, now: float, ids: AddressIds | None = None, is_public=None,
                 default_expires: int = 0, default_requirement: str = DEFAULT_REQUIREMENT):
        self.kind = kind
        self.now = now
        self.ids = ids
        self.is_public = is_public
        self.default_expires = default_expires
        self.default_requirement = default_requirement

    def parse(self, line: str) -> Entry | None:
        words, options = split_line(line)
        if not words and not options:
            return None
        unknown = sorted(set(options) - set(self.OPTIONS[self.kind]))
        if unknown:
            raise EntryError(f"unknown option {unknown[0]}=; known: "
                             + ", ".join(o + "=" for o in self.OPTIONS[self.kind]))
        expected = self.WORDS[self.kind]
        if len(words) != len(expected):
            hint = " (CSV? name the file .csv or give --format csv)" \
                if self.kind == "ab" and "," in line else ""
            raise EntryError(f"expected {' '.join(expected)} [options], got {len(words)} "
                             f"word{'s' if len(words) != 1 else ''}{hint}")
        expires = (parse_expiry(options["expires"], self.now) if "expires" in options
                   else self.default_expires)
        return self.entry(*words, expires=expires, requirement=options.get("require"))

    def entry(self, *words: str, expires: int = 0, requirement: str | None = None) -> Entry:
        if self.kind == "ip":
            return Entry("", ip_field(parse_ipv6_prefix(words[0])), ip_value(expires))
        if self.kind == "domain":
            domain, note = parse_domain(words[0], self.is_public)
            requirement = check_requirement(requirement or self.default_requirement)
            return Entry("", domain, domain_value(requirement, expires), note)
        return Entry(self.ids(words[0]), self.ids(words[1]), ip_value(expires))


def format_line(kind: str, suffix: str, field: str, value: str, show=lambda s: s) -> str:
    """The line ``import`` reads back as this entry; ``show`` renders addressbook ids."""
    from .prefixes import field_to_network
    if kind == "ip":
        words = [str(field_to_network(field))]
    elif kind == "domain":
        words = [field, "require=" + value_requirement(value)]
    else:
        words = [show(suffix), show(field)]
    expires = value_expiry(value)
    if expires:
        words.append("expires=" + format_expiry(expires))
    return " ".join(words)
