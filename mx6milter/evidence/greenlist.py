"""The greenlist tier: weaker signals that accept IPv6 mail subject to content filtering.

Signals (each switchable in ``[greenlist]``), as Finding kinds:

``fcrdns``        the client's PTR name resolves back to the client address
                  (AAAA) and the HELO name is that name
``baseline``      the industry's IPv6 minimum (Gmail, Microsoft): a forward-confirmed
                  PTR name (any, HELO aside) and an SPF pass (MAIL FROM, or HELO
                  for the null sender) or a DKIM pass (any d=)
``network``       the client is inside a greenlisted network (Redis kind ``green``)
``asn``           the longest prefix holding the client in the prefix-to-ASN table
                  (kind ``asn``) originates from ASNs on the ASN greenlist
                  (kind ``asnlist``); every origin must be listed
``mishandle4xx``  a known legitimate sender that mishandles 4xx replies: by
                  network, or by the domain of its forward-confirmed PTR name
                  (kind ``mishandle4xx``; a PTR alone is whatever the owner of
                  the reverse zone says, so it must resolve back first)
``history``       the From domain's authenticated history over IPv4 (history.py)
``arc``           a validated ARC chain sealed last by a trusted sealer (arc.py;
                  passed in by the evaluator as one of ``conclude``'s signals)
``registrar``     the registered From domain's registrar is on the operator's list
                  (rdap.py; RDAP answers fetched in the background, rdap_fetch.py)
``rdap``          that domain is old enough, its registrant public, and the client's
                  network names an abuse contact (rdap.py)

The rule: a message is greenlisted when at least ``min_signals`` different
signals pass (1: any one). The DNS work happens before the decision's Redis
read, so all Redis queries join the evaluator's one round trip.
"""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

from ..addresses import domain_suffixes
from ..dns import DnsTempError, reverse_nibbles
from .history import History, HistoryRecorder
from .rdap_fetch import RdapFetcher, RdapSignals
from ..model import Finding, Findings
from ..prefixes import field_to_network
from ..store import address_query

SIGNALS = ("fcrdns", "baseline", "network", "asn", "mishandle4xx", "history", "registrar", "rdap")
MAX_PTR_NAMES = 5        # a hostile reverse zone may list hundreds


def _clean(name: str) -> str:
    """A DNS name as it may appear in logs and headers."""
    return re.sub(r"[^a-z0-9._-]", "_", name.lower())[:255]


def reverse_name(address: ipaddress.IPv6Address) -> str:
    """'2001:db8::1' -> '1.0.0.0...8.b.d.0.1.0.0.2.ip6.arpa.'"""
    return reverse_nibbles(address) + ".ip6.arpa."


def check_fcrdns(budget, address: ipaddress.IPv6Address, helo: str) -> tuple:
    """(Finding, forward-confirmed PTR names) for the client address and HELO name."""
    reverse = reverse_name(address)
    try:
        ptrs = budget.query(reverse, "PTR")
    except DnsTempError as err:
        return Finding("fcrdns", "temperror", str(err)), ()
    names = sorted({rdata.target.to_text(omit_final_dot=True).lower() for rdata in ptrs})
    names = names[:MAX_PTR_NAMES]
    if not names:
        return Finding("fcrdns", "miss", "no PTR"), ()
    confirmed, trouble = [], None
    for name in names:
        try:
            forward = budget.query(name, "AAAA")
        except DnsTempError as err:
            trouble = err
            continue
        if any(ipaddress.IPv6Address(rdata.address) == address for rdata in forward):   # AAAA
            confirmed.append(name)
    if not confirmed:
        if trouble is not None:
            return Finding("fcrdns", "temperror", str(trouble)), ()
        return Finding("fcrdns", "fail", f"ptr={_clean(names[0])} does not resolve to the client"), ()
    helo_name = helo.strip().rstrip(".").lower()
    if helo_name in confirmed:
        return Finding("fcrdns", "pass", _clean(helo_name)), tuple(confirmed)
    return (Finding("fcrdns", "helo-mismatch", f"ptr={_clean(confirmed[0])} helo={_clean(helo_name)}"),
            tuple(confirmed))


def check_baseline(fcrdns: Finding, names: tuple, auth) -> Finding:
    """The ``baseline`` signal from the FCrDNS check's result and the authentication."""
    if not names:
        if fcrdns.result == "temperror":
            return Finding("baseline", "temperror", "PTR or its forward lookup failed")
        return Finding("baseline", "miss", "no forward-confirmed PTR")
    ptr = f"ptr={_clean(names[0])}"
    if auth.spf.result == "pass":
        return Finding("baseline", "pass", f"{ptr} spf={_clean(auth.spf.domain)}")
    dkim = sorted(auth.dkim_pass_domains)
    if dkim:
        return Finding("baseline", "pass", f"{ptr} dkim={_clean(dkim[0])}")
    return Finding("baseline", "miss", f"{ptr} but no SPF or DKIM pass")


def combine(min_signals: int, found: list) -> tuple:
    """The rule: (greenlist Findings, or (); a note Finding when too few passed, or None)."""
    kinds = {finding.kind for finding in found}
    if found and len(kinds) >= min_signals:
        return tuple(found), None
    if found:
        return (), Finding("greenlist", "insufficient", f"{len(kinds)}/{min_signals} signals")
    return (), None


def _longest(hits: list):
    """The IP-prefix hit with the longest prefix (ties: first source by name)."""
    prefixed = [h for h in hits if "/" in h.field and h.key == ""]
    if not prefixed:
        return None
    return max(sorted(prefixed, key=lambda h: h.source, reverse=True),
               key=lambda h: int(h.field.split("/")[1]))


class Greenlist:
    """Gathers the greenlist signals for the evaluator; owns the IPv4 history recorder."""

    def __init__(self, config, store, resolver, checker, clock=time.time):
        self.section = config.greenlist
        self.history = History(store, self.section, clock)
        self.recorder = None
        if self.section.history:
            self.recorder = HistoryRecorder(self.history, resolver, checker, config.dns.budget,
                                            self.section.history_queue_size)
        self.rdap = None
        if self.section.registrar or self.section.rdap:
            self.rdap = RdapSignals(self.section, RdapFetcher.from_config(config, store),
                                    checker.org_domain, clock)

    def prepare(self, budget, address: ipaddress.IPv6Address, helo: str, auth) -> Pending:
        """The DNS part, and the Redis queries to add to the decision's one lookup."""
        section = self.section
        fcrdns, names = None, ()
        if section.fcrdns or section.mishandle4xx or section.baseline:
            fcrdns, names = check_fcrdns(budget, address, helo)
        prefixes = [address_query(address)] \
            if section.networks or section.asn or section.mishandle4xx else []
        queries = {}
        if section.networks:
            queries["green"] = prefixes
        if section.asn:
            queries["asn"] = prefixes
        if section.mishandle4xx:
            domains = sorted({d for name in names for d in domain_suffixes(name)})
            queries["mishandle4xx"] = prefixes + [("", d) for d in domains]
        domain = auth.dmarc.from_domain if section.history else ""
        if domain:
            queries["history"] = History.query(domain)
        baseline = check_baseline(fcrdns, names, auth) if fcrdns and section.baseline else None
        rdap_domain = self.rdap.domain(auth) if self.rdap else ""
        if rdap_domain:
            queries["rdap"] = self.rdap.queries(rdap_domain, address)
        return Pending(self, queries, fcrdns if section.fcrdns else None, names, domain,
                       auth.aligned_via if domain else "", baseline, address, rdap_domain)

    # --- one signal each, from the lookup's answers ------------------------------

    @staticmethod
    def network_finding(hits: list) -> Finding:
        best = _longest(hits)
        if best is None:
            return Finding("network", "miss")
        return Finding("network", "pass", f"{field_to_network(best.field)} source={best.source}")

    @staticmethod
    def asn_finding(hits: list) -> Finding:
        best = _longest(hits)
        if best is None:
            return Finding("asn", "miss", "no ASN for the client")
        origins = best.value.split(" ", 1)[0].split(",")
        listed = {h.field for h in hits if h.key == "list"}
        detail = "+".join(f"AS{asn}" for asn in origins) + f" {field_to_network(best.field)}"
        if all(asn in listed for asn in origins):
            return Finding("asn", "pass", detail)
        return Finding("asn", "unlisted", detail)

    @staticmethod
    def mishandle4xx_finding(hits: list, names: tuple) -> Finding:
        best = _longest(hits)
        if best is not None:
            return Finding("mishandle4xx", "pass",
                           f"{field_to_network(best.field)} source={best.source}")
        domains = [h for h in hits if "/" not in h.field]
        if domains:
            entry = max(domains, key=lambda h: (len(h.field), h.source))
            name = next(n for n in names if n == entry.field or n.endswith("." + entry.field))
            return Finding("mishandle4xx", "pass",
                           f"ptr={_clean(name)} domain={_clean(entry.field)} source={entry.source}")
        return Finding("mishandle4xx", "miss")


@dataclass
class Pending:
    """One message's greenlist evidence between the DNS part and the Redis answer."""
    greenlist: Greenlist
    queries: dict
    fcrdns: Finding | None
    names: tuple
    domain: str
    via: str
    baseline: Finding | None = None
    address: ipaddress.IPv6Address | None = None
    rdap_domain: str = ""

    def conclude(self, answers: dict | None, signals: tuple = ()) -> Findings:
        """Every signal's Finding, and the greenlist Findings if they suffice.

        ``answers`` is None when Redis could not be read: only the DNS-based signals
        can count then. SIGNALS: passing signals other sources found (a DNS whitelist
        at greenlist trust), already among their own checks, counted here.
        """
        green = self.greenlist
        results = [finding for finding in (self.fcrdns, self.baseline) if finding is not None]
        if answers is not None:
            if "green" in self.queries:
                results.append(green.network_finding(answers["green"]))
            if "asn" in self.queries:
                results.append(green.asn_finding(answers["asn"]))
            if "mishandle4xx" in self.queries:
                results.append(green.mishandle4xx_finding(answers["mishandle4xx"], self.names))
            if "history" in self.queries:
                results.append(green.history.judge(answers["history"], self.domain, self.via))
        if green.rdap is not None:
            results += green.rdap.conclude(None if answers is None else answers.get("rdap", []),
                                           self.rdap_domain, self.address)
        found = [finding for finding in results if finding.result == "pass"] + list(signals)
        greenlist, note = combine(green.section.min_signals, found)
        if note is not None:
            results.append(note)
        return Findings(tuple(results), tuple(greenlist))
