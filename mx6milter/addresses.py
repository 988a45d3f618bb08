"""Mail addresses and domains from hostile input: parsed, checked, normalised."""
from __future__ import annotations

import email.utils
import re

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class AddressError(ValueError):
    pass


def domain_to_ascii(domain: str) -> str:
    """Lower-case A-label form of a domain; raises AddressError if it cannot be one."""
    domain = domain.strip().rstrip(".")
    if not domain:
        raise AddressError("empty domain")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError as err:
        raise AddressError(f"{domain!r}: not a valid domain ({err})") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"{domain!r}: not a valid domain")
    return ascii_domain


def split_address(address: str) -> tuple:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{address!r}: expected local-part@domain")
    if re.search(r"[\s<>\x00-\x1f\x7f]", local) or len(local) > 64:
        raise AddressError(f"{address!r}: bad local part")
    return local, domain


def normalise_address(address: str, fold_local_part: bool = True) -> str:
    """'Alice@Bücher.Example' -> 'alice@xn--bcher-kva.example' (local part folded if asked)."""
    local, domain = split_address(address)
    if fold_local_part:
        local = local.lower()
    return f"{local}@{domain_to_ascii(domain)}"


def domain_of(address: str) -> str | None:
    try:
        return domain_to_ascii(split_address(address)[1])
    except AddressError:
        return None


def from_addresses(values) -> list:
    """Every address in the From header fields given; [] if none parse."""
    out = []
    for _name, address in email.utils.getaddresses([str(v) for v in values]):
        if address:
            out.append(address)
    return out
