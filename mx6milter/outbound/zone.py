"""The records the MX6 proposal asks a receiver to publish, as zone-file lines."""
from __future__ import annotations

import ipaddress

from .plan import SMTP_PORT, SRV_PREFIX, normalize_domain


def zone_records(domain: str, mx6_host: str, ipv4: list, ipv6: list, mx_host: str = "",
                 port: int = SMTP_PORT, ttl: int | None = None) -> list:
    """The records the MX6 proposal asks a receiver to publish, as zone-file lines.

    The MX host keeps only A records, so MX6-unaware senders stay on IPv4; the
    SRV target carries the AAAA (and A, for the fallback) records.
    """
    domain = normalize_domain(domain)
    mx6_host = normalize_domain(mx6_host)
    mx_host = normalize_domain(mx_host) if mx_host else f"mx.{domain}"
    v4 = [_address(a, 4) for a in ipv4]
    v6 = [_address(a, 6) for a in ipv6]
    if not v4:
        raise ValueError("give at least one IPv4 address: the MX and the fallback need one")
    if not v6:
        raise ValueError("give at least one IPv6 address for the MX6 host")
    if mx_host == mx6_host:
        raise ValueError("the MX host must differ from the MX6 host: the MX host may not "
                         "have AAAA records, the MX6 host needs them")
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    ttl_text = f"{ttl} " if ttl is not None else ""

    def rr(owner, rtype, data):
        return f"{owner + '.':<32} {ttl_text}IN {rtype:<5} {data}"

    lines = [f"; MX6 records for {domain}, as the MX6 proposal asks.",
             "; The MX host has only A records: MX6-unaware senders deliver over IPv4.",
             rr(domain, "MX", f"0 {mx_host}.")]
    lines += [rr(mx_host, "A", a) for a in v4]
    lines.append("; MX6-aware senders find the SRV record and may deliver over IPv6;")
    lines.append("; told to fall back, they use the A records of the same host.")
    if port != SMTP_PORT:
        lines.append(f"; WARNING: port {port}: the proposal advises TCP/25, which outbound "
                     "port-25 controls expect")
    lines.append(rr(SRV_PREFIX + domain, "SRV", f"0 0 {port} {mx6_host}."))
    lines += [rr(mx6_host, "A", a) for a in v4]
    lines += [rr(mx6_host, "AAAA", a) for a in v6]
    return lines


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: not an IP address") from None
    if address.version != version:
        raise ValueError(f"{text!r}: not an IPv{version} address")
    if version == 6 and address.ipv4_mapped is not None:
        raise ValueError(f"{text!r}: an IPv4-mapped address is IPv4 on the wire, not IPv6")
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text!r}: not a unicast address")
    return str(address)
