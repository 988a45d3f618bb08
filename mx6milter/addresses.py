"""Mail addresses and domains from hostile input: parsed, checked, normalised.

Domains become lower-case A-labels (IDNA 2008 with UTS #46 mapping, as mail
software and DNS expect); local parts are kept as sent, or their ASCII
letters lower-cased when the operator asks for it. Nothing here raises anything but AddressError.
"""
from __future__ import annotations

import email.utils
import functools
import logging
import re

import idna

log = logging.getLogger(__name__)

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")   # '_' as in SRV owners and some hosts
_MAX_DOMAIN = 253
_MAX_LOCAL = 64
_MAX_FROM = 8192      # longer From fields are not parsed (no legitimate one is that long)


class AddressError(ValueError):
    pass


# Domains met again and again (a decision normalises about six): kept, at most
# DOMAINS_KEPT answers for inputs of at most _MAX_KEPT_INPUT characters, about 1 MB.
# Refusals raise, and are never kept.
DOMAINS_KEPT = 2048
_MAX_KEPT_INPUT = 300


def domain_to_ascii(domain: str, underscore: bool = False) -> str:
    """Lower-case A-label form of a domain; raises AddressError if it cannot be one.

    The one normalisation of domains everywhere (mail domains, whitelist entries,
    MX6 host names). UNDERSCORE allows '_' in labels, for DNS names that are not
    mail domains (MX and SRV targets)."""
    if len(domain) <= _MAX_KEPT_INPUT:
        return _domain_to_ascii_kept(domain, underscore)
    return _domain_to_ascii(domain, underscore)


@functools.lru_cache(maxsize=DOMAINS_KEPT)
def _domain_to_ascii_kept(domain: str, underscore: bool) -> str:
    return _domain_to_ascii(domain, underscore)


def _domain_to_ascii(domain: str, underscore: bool) -> str:
    domain = domain.strip().rstrip(".")
    if not domain:
        raise AddressError("empty domain")
    if len(domain) > _MAX_DOMAIN:
        raise AddressError("domain longer than 253 characters")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as err:
            raise AddressError(f"{domain!r}: not a valid domain ({err})") from None
    labels = ascii_domain.split(".")
    label = _HOST_LABEL if underscore else _LABEL
    if len(ascii_domain) > _MAX_DOMAIN or not all(label.fullmatch(part) for part in labels):
        raise AddressError(f"{domain!r}: not a valid domain")
    return ascii_domain


def split_address(address: str) -> tuple:
    """(local part, domain as given); raises AddressError."""
    address = strip_brackets(address)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{address[:100]!r}: expected local-part@domain")
    if re.search(r"[\s<>\x00-\x1f\x7f]", local) or len(local) > _MAX_LOCAL:
        raise AddressError(f"{address[:100]!r}: bad local part")
    try:
        local.encode("utf-8")   # undecodable 8-bit input arrives as lone surrogates
    except UnicodeError:
        raise AddressError(f"{address[:100]!r}: local part is not UTF-8") from None
    return local, domain


# Only A-Z are folded. Unicode case mappings join characters that are different
# mailboxes to every mail system that does not fold them the same way: the
# Kelvin sign lower-cases to ASCII k, U+0130 to i plus a combining dot, ß
# case-folds to ss. Nor is NFC applied: it too turns the Kelvin sign into K.
# A missed match costs a retry over IPv4; a false one accepts on someone else's
# evidence.
def _fold_char(char: str) -> str:
    """CHAR lower-cased when that is one character of the same kind: ASCII to ASCII,
    non-ASCII to non-ASCII. Never a non-ASCII letter into ASCII (the Kelvin sign
    into k, U+0130 into i + dot): that would let another mailbox match an entry."""
    lower = char.lower()
    return lower if len(lower) == 1 and lower.isascii() == char.isascii() else char


def normalise_address(address: str, fold_local_part: bool = True) -> str:
    """'Alice@Bücher.Example' -> 'alice@xn--bcher-kva.example'; with fold_local_part
    the local part's letters are lower-cased where that keeps each one what it was,
    ASCII or not (``_fold_char``); no other normalisation (NFC and NFD differ)."""
    local, domain = split_address(address)
    if fold_local_part:
        local = local.lower() if local.isascii() else "".join(map(_fold_char, local))
    return f"{local}@{domain_to_ascii(domain)}"


def domain_of(address: str) -> str | None:
    try:
        return domain_to_ascii(split_address(address)[1])
    except AddressError:
        return None


# The common From field, a plain name (words, or a quoted string of them) and
# <dot-atom@dot-atom>, or the bare address, with blanks around: email.utils reads
# these token by token in Python; what it would give is the address as written.
# Runs of blanks are taken possessively (*+, ++): a field of thousands of blanks
# that is not plain must fail at once, not after trying every split of the run.
_DOT_ATOM = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
_PLAIN_FROM = re.compile(rf' *+(?:(?:[A-Za-z0-9]+ ++)*[A-Za-z0-9]* *+<(?P<angle>{_DOT_ATOM}@{_DOT_ATOM})>'
                         rf'|"[A-Za-z0-9 ]*+" *+<(?P<quoted>{_DOT_ATOM}@{_DOT_ATOM})>'
                         rf'|(?P<bare>{_DOT_ATOM}@{_DOT_ATOM})) *+')


def from_addresses(values) -> list | None:
    """Every address in the From header fields given; None if they cannot be parsed."""
    values = [str(v) for v in values]
    if sum(len(v) for v in values) > _MAX_FROM:
        return None
    plain = []
    for value in values:
        match = _PLAIN_FROM.fullmatch(value)
        if match is None:
            break
        plain.append(match.group("angle") or match.group("quoted") or match.group("bare"))
    else:
        return plain
    try:
        pairs = email.utils.getaddresses(values)
    except Exception as err:   # e.g. RecursionError on thousands of nested comments
        log.info("From field could not be parsed: %r", err)
        return None
    return [address for _name, address in pairs if address]


def strip_brackets(address: str) -> str:
    """'<a@b>' -> 'a@b': an SMTP path as the MTA passes it, without its brackets."""
    address = address.strip()
    return address[1:-1] if address.startswith("<") and address.endswith(">") else address


def domain_suffixes(domain: str) -> list:
    """'a.b.example.org' -> ['a.b.example.org', 'b.example.org', 'example.org']."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]
