"""Auditing what a domain publishes against what the MX6 proposal asks of a receiver."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .plan import MAX_HOSTS, SMTP_PORT, SRV_PREFIX, _addresses, _Recorder, _target, normalize_domain


@dataclass(frozen=True)
class AuditItem:
    level: str          # ok | note | warn | error
    text: str

    def __str__(self) -> str:
        return f"{self.level.upper():5} {self.text}"


@dataclass
class Audit:
    domain: str
    items: list = field(default_factory=list)
    temporary: bool = False

    def add(self, level: str, text: str) -> None:
        self.items.append(AuditItem(level, text))

    @property
    def departs(self) -> bool:
        return any(f.level in ("warn", "error") for f in self.items)


def check_domain(resolver, domain: str) -> Audit:
    """Compare what DOMAIN publishes with what the MX6 proposal asks of a receiver."""
    domain = normalize_domain(domain)
    audit = Audit(domain)
    rec = _Recorder(resolver)
    mx_hosts = _check_mx(rec, audit, domain)
    if mx_hosts is not None:
        _check_srv(rec, audit, domain, mx_hosts)
    return audit


def _temporary(rec: _Recorder, audit: Audit, what: str) -> None:
    """Record a temporary DNS failure on WHAT; the caller checks nothing further."""
    audit.temporary = True
    audit.add("error", f"{what}: temporary DNS failure ({rec.errors[-1]}); checked nothing further")


def _check_mx(rec: _Recorder, audit: Audit, domain: str) -> list | None:
    """The MX part: the MX hosts (or the implicit MX), or None when the audit stops here."""
    mx = rec.query(domain, "MX")
    if mx is None:
        _temporary(rec, audit, f"MX {domain}")
        return None
    mx_hosts = sorted({_target(r) for r in mx if hasattr(r, "exchange")})
    if "" in mx_hosts or "." in mx_hosts:
        audit.add("error", f"MX {domain} is a null MX: the domain accepts no mail, so MX6 is moot")
        return None
    if not mx_hosts:
        audit.add("note", f"no MX for {domain}: senders use the implicit MX, {domain} itself")
        mx_hosts = [domain]
    for host in mx_hosts[:MAX_HOSTS]:
        a, aaaa = rec.query(host, "A"), rec.query(host, "AAAA")
        if a is None or aaaa is None:
            _temporary(rec, audit, f"addresses of MX host {host}")
            return None
        v4, v6 = _addresses(a, 4), _addresses(aaaa, 6)
        if not v4:
            audit.add("error", f"MX host {host} has no A record: MX6-unaware senders, which "
                      "use the MX over IPv4, cannot reach it")
        if v6:
            audit.add("warn", f"MX host {host} has AAAA {', '.join(v6)}: MX6-unaware senders "
                      "will deliver over IPv6; the proposal keeps the MX IPv4-only")
        elif v4:
            audit.add("ok", f"MX host {host}: IPv4 only ({', '.join(v4)})")
    return mx_hosts


def _check_srv(rec: _Recorder, audit: Audit, domain: str, mx_hosts: list) -> None:
    """The SRV part: the record set as a whole, then each target."""
    srv = rec.query(SRV_PREFIX + domain, "SRV")
    if srv is None:
        _temporary(rec, audit, f"SRV {SRV_PREFIX}{domain}")
        return
    records = [r for r in srv if hasattr(r, "target")]
    if not records:
        audit.add("note", f"no SRV {SRV_PREFIX}{domain}: {domain} does not offer MX6; "
                  "aware senders use the MX over IPv4")
        return
    if any(_target(r) in ("", ".") for r in records):
        if len(records) > 1:
            audit.add("error", 'SRV "." (service not offered) must be the only SRV record')
        else:
            audit.add("note", f'SRV {SRV_PREFIX}{domain} is ".": MX6 decidedly not offered')
        return
    for record in records[:MAX_HOSTS]:
        if not _check_srv_target(rec, audit, record, mx_hosts):
            return


def _check_srv_target(rec: _Recorder, audit: Audit, record, mx_hosts: list) -> bool:
    """One SRV target; False when a temporary DNS failure stops the audit."""
    target, port = _target(record), int(record.port)
    label = f"SRV target {target} (priority {record.priority}, weight {record.weight}, port {port})"
    if port != SMTP_PORT:
        audit.add("warn", f"{label}: port {port}; the proposal advises TCP/25, which "
                  "outbound port-25 controls expect")
    cname = rec.query(target, "CNAME")
    a, aaaa = rec.query(target, "A"), rec.query(target, "AAAA")
    if cname is None or a is None or aaaa is None:
        _temporary(rec, audit, f"addresses of SRV target {target}")
        return False
    if cname:
        audit.add("warn", f"{label}: is an alias (CNAME); RFC 2782 targets must not be")
    v4 = _addresses(a, 4)
    v6_all = _addresses(aaaa, 6)
    mapped = [x for x in v6_all if ipaddress.IPv6Address(x).ipv4_mapped is not None]
    v6 = [x for x in v6_all if x not in mapped]
    if mapped:
        audit.add("warn", f"{label}: AAAA {', '.join(mapped)} is IPv4-mapped, which is "
                  "IPv4 on the wire, not IPv6")
    if not v6:
        audit.add("warn", f"{label}: no (real) AAAA record, so MX6 brings no IPv6 delivery")
    if not v4:
        audit.add("warn", f"{label}: no A record; senders told to fall back to IPv4 "
                  "must go to the MX hosts")
    if target in mx_hosts:
        audit.add("note", f"{label}: also an MX host; use a separate name so the MX can "
                  "stay IPv4-only")
    if v6 and v4 and port == SMTP_PORT and not cname:
        audit.add("ok", f"{label}: IPv6 {', '.join(v6)}, IPv4 fallback {', '.join(v4)}")
    return True
