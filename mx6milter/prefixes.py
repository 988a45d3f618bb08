"""IPv6 prefixes as hash fields: how an address or a prefix is written in Redis. Pure."""
from __future__ import annotations

import ipaddress


def ip_field(network: ipaddress.IPv6Network) -> str:
    """'2001:db8::/32' -> '20010db8/32': the hex digits the prefix covers."""
    length = network.prefixlen
    digits = (length + 3) // 4
    text = f"{int(network.network_address):032x}"[:digits]
    return f"{text}/{length}"


def field_to_network(field: str) -> ipaddress.IPv6Network:
    text, length = field.split("/")
    return ipaddress.IPv6Network((int(text.ljust(32, "0"), 16), int(length)))


def ip_candidates(address: ipaddress.IPv6Address) -> list:
    """Every prefix containing the address, longest first: fields to look up."""
    value = int(address)
    fields = []
    for length in range(128, -1, -1):
        masked = (value >> (128 - length)) << (128 - length) if length else 0
        digits = (length + 3) // 4
        fields.append(f"{masked:032x}"[:digits] + f"/{length}")
    return fields
