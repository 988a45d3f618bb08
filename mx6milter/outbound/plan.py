"""MX6 on the wire: the delivery plan of an MX6-aware (or plain) sender.

An MX6-aware sender looks up ``SRV _mx6._tcp.DOMAIN``. If the receiver
publishes it, the targets (in RFC 2782 order) may be used over IPv6 and IPv4;
a "fall back to IPv4" reply sends the sender to their IPv4 addresses. If there
is no SRV record, or its target is ".", the sender uses the MX records (or the
implicit MX) over IPv4 only, because MX6 says an unaware receiver publishes
only A records for its MX. A plain (MX6-unaware) sender uses the MX records
with both address families.

Everything here takes its resolver as an argument (``Resolver`` or a
per-message ``Budget``: anything with ``query(name, rdtype)``). A temporary
DNS failure is kept as such in the plan and never read as "no record".
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.rdataset

from ..addresses import AddressError, domain_to_ascii
from ..dns import DnsTempError

SRV_PREFIX = "_mx6._tcp."
SMTP_PORT = 25
MAX_HOSTS = 10            # hostile DNS may return hundreds of MX or SRV records
MAX_ADDRESSES = 10        # per host and family


class BadName(ValueError):
    """Not a usable domain name."""


def normalize_domain(text: str) -> str:
    """A lower-case A-label domain without the trailing dot, or BadName
    (addresses.domain_to_ascii, with '_' allowed as in host and SRV names)."""
    text = (text or "").strip()
    if not text or text == "." or any(ch.isspace() for ch in text):
        raise BadName(f"{text!r}: not a domain name")
    try:
        return domain_to_ascii(text, underscore=True)
    except AddressError as err:
        raise BadName(f"{text!r}: not a host or domain name ({err})") from None


@dataclass(frozen=True)
class Host:
    """One MX or SRV target with what its address lookups gave."""
    name: str
    port: int
    preference: int                     # SRV priority or MX preference
    weight: int = 0
    ipv4: tuple = ()
    ipv6: tuple = ()
    errors: tuple = ()                  # temporary failures of its A/AAAA lookups


@dataclass(frozen=True)
class Attempt:
    """One connection to make."""
    host: str
    address: str
    family: int                         # 4 or 6
    port: int

    def __str__(self) -> str:
        where = f"[{self.address}]" if self.family == 6 else self.address
        return f"{where}:{self.port} ({self.host}, IPv{self.family})"


@dataclass(frozen=True)
class Plan:
    """Where a sender delivers mail for DOMAIN, and what DNS said on the way."""
    domain: str
    aware: bool
    route: str                          # srv | mx | implicit-mx | null-mx | none
    hosts: tuple = ()
    lookups: tuple = ()                 # (name, type) in the order they were made
    errors: tuple = ()                  # temporary DNS failures, as text
    srv_absent: str = ""                # aware, MX route: why SRV was not used (nothing,
                                        # dot) or "fallback": after the SRV targets failed
    families: tuple = (4, 6)            # address families the route may use

    @property
    def temporary(self) -> bool:
        return bool(self.errors)

    def attempts(self) -> list:
        """Connections in order: hosts by preference, IPv6 before IPv4 within a host."""
        out = []
        for host in self.hosts:
            if 6 in self.families:
                out += [Attempt(host.name, a, 6, host.port) for a in host.ipv6]
            if 4 in self.families:
                out += [Attempt(host.name, a, 4, host.port) for a in host.ipv4]
        return out


# --- resolution ------------------------------------------------------------------


class _Recorder:
    """Runs lookups through the resolver and remembers them and their failures."""

    def __init__(self, resolver):
        self.resolver = resolver
        self.lookups: list = []
        self.errors: list = []

    def query(self, name: str, rdtype: str):
        """The rdatas, or None after a temporary failure (recorded)."""
        self.lookups.append((name, rdtype))
        try:
            return self.resolver.query(name, rdtype)
        except DnsTempError as err:
            self.errors.append(str(err))
            return None


def processing_order(records: list) -> list:
    """The order a client tries SRV or MX records in, by dnspython's
    ``Rdataset.processing_order()``: SRV by RFC 2782 (ascending priority, a
    weighted random order within one; a zero weight is rarely first, never
    lost), MX by RFC 5321 5.1 (ascending preference, equal ones shuffled).
    Identical records count once."""
    if not records:
        return []
    return list(dns.rdataset.from_rdata_list(0, records).processing_order())


def _target(rdata) -> str:
    return rdata.target.to_text(omit_final_dot=True).lower() if hasattr(rdata, "target") \
        else rdata.exchange.to_text(omit_final_dot=True).lower()


def _addresses(rdatas, version: int) -> tuple:
    """Valid addresses of one family, in answer order, without duplicates, capped."""
    seen = []
    for rdata in rdatas or ():
        try:
            address = ipaddress.ip_address(rdata.address)
        except (AttributeError, ValueError):
            continue
        if address.version == version and str(address) not in seen:
            seen.append(str(address))
    return tuple(seen[:MAX_ADDRESSES])


def _resolve_host(rec: _Recorder, name: str, port: int, preference: int, weight: int,
                  families: tuple) -> Host:
    errors_before = len(rec.errors)
    ipv4 = _addresses(rec.query(name, "A"), 4) if 4 in families else ()
    ipv6 = _addresses(rec.query(name, "AAAA"), 6) if 6 in families else ()
    return Host(name, port, preference, weight, ipv4, ipv6, tuple(rec.errors[errors_before:]))


def resolve_mx(rec: _Recorder, domain: str, families: tuple, port: int) -> tuple:
    """(route, hosts) from the MX records, the implicit MX or a null MX."""
    answer = rec.query(domain, "MX")
    if answer is None:
        return "none", ()
    records = [r for r in answer if hasattr(r, "exchange")]
    if not records:
        return "implicit-mx", (_resolve_host(rec, domain, port, 0, 0, families),)
    if any(_target(r) in ("", ".") for r in records):
        # RFC 7505: a null MX says the domain accepts no mail.
        return "null-mx", ()
    hosts = []
    for record in processing_order(records)[:MAX_HOSTS]:
        hosts.append(_resolve_host(rec, _target(record), port, record.preference, 0, families))
    return "mx", tuple(hosts)


def resolve_plan(resolver, domain: str, aware: bool = True, mx_port: int = SMTP_PORT) -> Plan:
    """The delivery plan for DOMAIN, of an MX6-aware sender or (aware=False) a plain one."""
    domain = normalize_domain(domain)
    rec = _Recorder(resolver)
    if not aware:
        route, hosts = resolve_mx(rec, domain, (4, 6), mx_port)
        return Plan(domain, False, route, hosts, tuple(rec.lookups), tuple(rec.errors))

    srv = rec.query(SRV_PREFIX + domain, "SRV")
    if srv is None:
        # Not knowing whether MX6 is offered is not the same as it being absent.
        return Plan(domain, True, "none", (), tuple(rec.lookups), tuple(rec.errors))
    records = [r for r in srv if hasattr(r, "target") and _target(r) not in ("", ".")]
    if not records:
        why = "dot" if srv else "nothing"
        route, hosts = resolve_mx(rec, domain, (4,), mx_port)
        return Plan(domain, True, route, hosts, tuple(rec.lookups), tuple(rec.errors),
                    srv_absent=why, families=(4,))
    hosts = []
    for record in processing_order(records)[:MAX_HOSTS]:
        hosts.append(_resolve_host(rec, _target(record), int(record.port), record.priority,
                                   record.weight, (4, 6)))
    return Plan(domain, True, "srv", tuple(hosts), tuple(rec.lookups), tuple(rec.errors))


def resolve_ipv4_fallback(resolver, domain: str, mx_port: int = SMTP_PORT) -> Plan:
    """The MX route over IPv4, for when no IPv4 address of the SRV targets took the mail."""
    rec = _Recorder(resolver)
    route, hosts = resolve_mx(rec, normalize_domain(domain), (4,), mx_port)
    return Plan(domain, True, route, hosts, tuple(rec.lookups), tuple(rec.errors),
                srv_absent="fallback", families=(4,))


# --- the plan in the proposal's words -----------------------------------------------


def _where(address: str, port: int) -> str:
    return address if port == SMTP_PORT else f"{address} port {port}"


def _gets_line(host: Host) -> str:
    addresses = [a for a in host.ipv4] + [a for a in host.ipv6]
    name = host.name if host.port == SMTP_PORT else f"{host.name} port {host.port}"
    line = f"Gets {name} and then " + (" and ".join(addresses) if addresses else "no address")
    if host.errors:
        line += " (temporary DNS failure: " + "; ".join(host.errors) + ")"
    return line


def describe(plan: Plan, fallback: str = "550 5.5.7") -> list:
    """The plan step by step, in the words of the MX6 proposal's scenarios."""
    lines: list = []
    if not _describe_lookups(plan, lines):
        return lines
    for host in plan.hosts:
        lines.append(_gets_line(host))
    attempts = plan.attempts()
    if not attempts:
        if plan.temporary:
            lines.append("Has no address to connect to; tries again later")
        else:
            family = "IPv4 " if plan.families == (4,) else ""
            lines.append(f"Has no {family}address to connect to; gives up (bounces)")
        return lines
    first = attempts[0]
    lines.append(f"Connects via IPv{first.family} to {_where(first.address, first.port)}")
    lines.append("Proceeds as usual")
    if plan.route == "srv":
        _describe_srv_fallback(plan, attempts, fallback, lines)
    if len(attempts) > 1:
        lines.append("If a host cannot be reached or answers 4xx, tries the next, in this order: "
                     + ", ".join(str(a) for a in attempts))
    return lines


def _describe_lookups(plan: Plan, lines: list) -> bool:
    """The SRV and MX lookups into LINES; False when the plan ends there."""
    domain = plan.domain
    if plan.aware and plan.srv_absent == "fallback":
        lines.append("No IPv4 host of the SRV record took the message")
    elif plan.aware:
        lines.append(f'Looks up "SRV {SRV_PREFIX}{domain}"')
        if plan.route == "none":
            lines.append("Gets a temporary DNS failure: " + "; ".join(plan.errors))
            lines.append("Tries again later (a failed lookup is not an absent record)")
            return False
        if plan.route != "srv":
            lines.append("Gets nothing" if plan.srv_absent == "nothing"
                         else 'Gets "." (MX6 is decidedly not offered)')
    if plan.route != "srv":
        lines.append(f'Looks up "MX {domain}"')
        if plan.route == "none":
            lines.append("Gets a temporary DNS failure: " + "; ".join(plan.errors))
            lines.append("Tries again later (a failed lookup is not an absent record)")
            return False
        if plan.route == "null-mx":
            lines.append(f'Gets a null MX ("."): {domain} accepts no mail')
            lines.append("Gives up (bounces)")
            return False
        if plan.route == "implicit-mx":
            lines.append(f"Gets nothing, so uses {domain} itself (the implicit MX)")
    return True


def _describe_srv_fallback(plan: Plan, attempts: list, fallback: str, lines: list) -> None:
    """The SRV route's ways back to IPv4 into LINES: on the fallback reply, and past the SRV hosts."""
    first = attempts[0]
    ipv4 = [a for a in attempts if a.family == 4]
    if first.family == 6:
        target = (" and then ".join(_where(a.address, a.port) for a in ipv4) if ipv4
                  else f'the IPv4 hosts of "MX {plan.domain}"')
        lines.append(f"If after the DATA phase it gets {fallback}: connects via IPv4 to {target}")
    if ipv4:
        lines.append(f'If no IPv4 host of the SRV record takes the message: looks up '
                     f'"MX {plan.domain}" and connects via IPv4 to its hosts')
