"""DNS whitelists: RFC 5782 queries, dnswl.org's answers, RFC 8904 results.

The query: for an IP zone, the client's IPv6 address as 32 nibbles, last first,
under the zone (``1.0.0...8.b.d.0.1.0.0.2.list.dnswl.org``); for a domain zone,
each domain with a DKIM pass under the zone (``example.com.dwl.dnswl.org``).
Every query goes through the message's ``dns.Budget`` (the one resolver, its TTL
cache, the per-message deadline).

The answer (``classify``, pure) follows dnswl.org's scheme ``127.0.x.y``: x the
category, y the trust (0 none, 1 low, 2 medium, 3 high). Answers that report an
error and not a listing are never evidence: ``127.0.0.255`` (query refused or over
quota), ``127.255.255.0/24`` (Spamhaus' error codes, e.g. .254 "query through a
public resolver"), any other address, inside 127.0.0.0/8 or not. They are
logged, counted (``Dnswl.errors``) and shown in explain. A DNS failure is
``temperror``: never a listing, and the evidence counts as not gathered.

Findings, kind ``dnswl``: trust >= ``[dnswl] whitelist_trust`` whitelists,
trust >= ``greenlist_trust`` is a greenlist signal, lower trust is shown only.
Authentication-Results (RFC 8904): ``dnswl=pass dns.zone=ZONE policy.ip=127.0.x.y``
and ``policy.txt`` when the zone publishes TXT for the name.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

from ..dns import DnsTempError, reverse_nibbles
from ..model import Finding, Findings
from .auth import _RFC2045_TOKEN, _pvalue, _resinfo

log = logging.getLogger(__name__)

TRUST = ("none", "low", "medium", "high")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
ERROR_CODES = ipaddress.IPv4Network("127.255.255.0/24")
OVER_QUOTA = ipaddress.IPv4Address("127.0.0.255")
MAX_TXT = 120             # characters of a zone's TXT kept for policy.txt
LOG_EVERY = 100           # an error answer is logged the first time, then every 100th


@dataclass(frozen=True)
class Answer:
    """What one zone's A records say about one name."""
    result: str               # "listed", "unlisted" or "error"
    address: str = ""         # the 127.0.x.y that counts, or the answer that is an error
    category: int = 0
    trust: int = 0
    reason: str = ""          # for an error: what it means


def _error_reason(address: ipaddress.IPv4Address) -> str:
    """Why an answer is not a listing, or "" if it is one (127.0.x.y, y 0-3)."""
    if address == OVER_QUOTA:
        return "query refused or over quota"
    if address in ERROR_CODES:
        return "the list's error code"
    if address not in LOOPBACK:
        return "outside 127.0.0.0/8"
    if address.packed[1] != 0 or address.packed[3] > 3:
        return "not a dnswl.org answer (127.0.x.y, y 0-3)"
    return ""


def classify(addresses) -> Answer:
    """The zone's A records (address texts) -> an Answer. Pure; never raises.

    No records: unlisted. Any record that is not a listing makes the whole
    answer an error (a list that reports an error has said nothing about the
    client); otherwise the listing with the highest trust counts."""
    best = None
    for text in addresses:
        try:
            address = ipaddress.IPv4Address(text)
        except (ValueError, TypeError):
            return Answer("error", _printable(text), reason="not an IPv4 address")
        reason = _error_reason(address)
        if reason:
            return Answer("error", str(address), reason=reason)
        listed = Answer("listed", str(address), address.packed[2], address.packed[3])
        if best is None or listed.trust > best.trust:
            best = listed
    return best or Answer("unlisted")


def _printable(value) -> str:
    text = str(value)[:64]
    return "".join(ch if "!" <= ch <= "~" else "?" for ch in text)


def policy_txt(records) -> str:
    """The first TXT record, at most MAX_TXT characters, as a quoted-string every
    parser reads back alike: printable ASCII without '"', '\\' and ';' (each as '?')."""
    if not records:
        return ""
    text = records[0].decode("ascii", "replace")[:MAX_TXT]
    return " ".join("".join(ch if " " <= ch <= "~" and ch not in '"\\;' else "?"
                            for ch in text).split())


@dataclass(frozen=True)
class ZoneResult:
    """One query's result, for Authentication-Results (RFC 8904)."""
    zone: str
    result: str               # pass (listed, any trust), temperror, permerror (an error answer)
    ip: str = ""              # policy.ip
    txt: str = ""             # policy.txt
    domain: str = ""          # the DKIM domain looked up in a domain zone; "" for the IP
    reason: str = ""
    trust: int = -1           # of a listing


@dataclass(frozen=True)
class Listing:
    """Everything the DNS whitelists said about one message."""
    findings: Findings = field(default_factory=Findings)   # every check; evidence: the whitelisting ones
    signals: tuple = ()               # greenlist signals (listed at greenlist trust)
    results: tuple = ()               # ZoneResults for Authentication-Results
    temperror: bool = False           # a query failed: evidence not gathered


def render_dnswl_results(listing: Listing) -> tuple:
    """Authentication-Results entries (RFC 8904), one per query:
    ``dnswl=pass (d=DOMAIN) dns.zone=ZONE policy.ip=127.0.x.y policy.txt="..."``."""
    rendered = []
    for zone in listing.results:
        comment = f"d={zone.domain}" if _RFC2045_TOKEN.fullmatch(zone.domain) else ""   # no '(' or ')'
        rendered.append(_resinfo("dnswl", zone.result, comment, zone.reason,
                                 [("dns.zone", _pvalue(zone.zone, last=False)),
                                  ("policy.ip", _pvalue(zone.ip, last=False)),
                                  ("policy.txt", _pvalue(zone.txt))]))
    return tuple(rendered)


class Dnswl:
    """Queries the configured zones for one message; counts the error answers."""

    def __init__(self, section):
        self.section = section
        self.errors: Counter = Counter()      # (zone, answer) -> error answers seen
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.section.zones or self.section.domain_zones)

    def check(self, budget, address: ipaddress.IPv6Address, dkim_domains=()) -> Listing:
        queries = [(zone, "", reverse_nibbles(address)) for zone in self.section.zones]
        queries += [(zone, domain, domain) for zone in self.section.domain_zones
                    for domain in sorted(dkim_domains)]
        checks, white, green, results = [], [], [], []
        temperror = False
        for zone, domain, label in queries:
            finding, result = self._query(budget, zone, domain, f"{label}.{zone}")
            checks.append(finding)
            if result is not None:
                results.append(result)
            temperror = temperror or finding.result == "temperror"
            if finding.result == "pass":
                (white if result.trust >= self.section.whitelist_trust else green).append(finding)
        return Listing(Findings(tuple(checks), tuple(white)), tuple(green), tuple(results), temperror)

    def _query(self, budget, zone: str, domain: str, name: str) -> tuple:
        """(Finding, ZoneResult or None) for one name in one zone."""
        where = f"{zone} d={domain}" if domain else zone
        try:
            answer = classify(rdata.address for rdata in budget.query(name, "A"))
        except DnsTempError as err:
            return (Finding("dnswl", "temperror", f"{where} {err}"),
                    ZoneResult(zone, "temperror", domain=domain, reason=str(err)))
        if answer.result == "unlisted":
            return Finding("dnswl", "miss", where), None
        if answer.result == "error":
            self._count_error(zone, answer)
            return (Finding("dnswl", "error", f"{where} {answer.address}: {answer.reason}; not evidence"),
                    ZoneResult(zone, "permerror", answer.address, domain=domain, reason=answer.reason))
        detail = f"{where} {answer.address} trust={TRUST[answer.trust]}"
        result = ZoneResult(zone, "pass", answer.address, self._txt(budget, name), domain,
                            trust=answer.trust)
        if answer.trust < min(self.section.whitelist_trust, self.section.greenlist_trust):
            return Finding("dnswl", "low-trust", detail), result
        return Finding("dnswl", "pass", detail), result

    @staticmethod
    def _txt(budget, name: str) -> str:
        try:
            return policy_txt(budget.txt(name))
        except DnsTempError:
            return ""           # the listing stands; only its text is missing

    def _count_error(self, zone: str, answer: Answer) -> None:
        with self._lock:
            self.errors[(zone, answer.address)] += 1
            seen = self.errors[(zone, answer.address)]
        if seen == 1 or seen % LOG_EVERY == 0:
            log.warning("dnswl zone %s answered %s (%s): not a listing, never evidence; "
                        "%d such answers since start", zone, answer.address, answer.reason, seen)
