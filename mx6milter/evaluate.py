"""Session + Message -> Evidence -> Decision. Used by the milter and by ``mx6ctl explain``."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .addresses import AddressError, normalise_address
from .auth import AuthOutcome, Dmarc, authenticate, render_auth_results
from .config import Config
from .dns import Resolver
from .greenlist import Greenlist
from .model import Decision, Evidence, Finding, Message, Session, SessionClass
from .policy import classify, decide, parse_client_ip
from .store import Store, StoreUnavailable, field_to_network, ip_candidates

log = logging.getLogger(__name__)

DOMAIN_REQUIREMENTS = ("dmarc", "dkim", "spf", "any")
DEFAULT_REQUIREMENT = "dmarc"      # the From domain authenticated in alignment


@dataclass(frozen=True)
class Outcome:
    evidence: Evidence
    decision: Decision
    auth: AuthOutcome | None
    elapsed_ms: float


def domain_suffixes(domain: str) -> list:
    """'a.b.example.org' -> ['a.b.example.org', 'b.example.org', 'example.org']."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)] if len(labels) > 1 else []


def covers(entry: str, domain: str) -> bool:
    """A whitelist entry covers its domain and every subdomain of it."""
    return bool(domain) and bool(entry) and (domain == entry or domain.endswith("." + entry))


def requirement_of(value: str) -> str:
    """What a domain entry ("REQUIREMENT EXPIRY") asks for; unreadable means the default."""
    parts = value.split()
    if len(parts) > 1 and parts[0] in DOMAIN_REQUIREMENTS:
        return parts[0]
    return DEFAULT_REQUIREMENT


class Evaluator:
    def __init__(self, config: Config, store: Store, resolver: Resolver, dmarc: Dmarc | None = None):
        self.config = config
        self.store = store
        self.resolver = resolver
        self.dmarc = dmarc or Dmarc()
        self.greenlist = Greenlist(config, store, resolver, self.dmarc)

    def evaluate(self, session: Session, message: Message) -> Outcome:
        started = time.monotonic()
        evidence, auth = self.gather(session, message)
        decision = decide(self.config.policy, evidence)
        return Outcome(evidence, decision, auth, (time.monotonic() - started) * 1000)

    def session_class(self, session: Session) -> SessionClass:
        return classify(session, self.config.policy.trusted_networks)

    # --- evidence ---------------------------------------------------------------

    def gather(self, session: Session, message: Message):
        session_class = self.session_class(session)
        if session_class is not SessionClass.IPV6:
            return Evidence(session_class, checks=(Finding("session", session_class.value),)), None
        address = parse_client_ip(session.client_ip)
        budget = self.resolver.budget(self.config.dns.budget)
        from_values = [value for name, value in message.headers if name.lower() == "from"]
        auth = authenticate(budget, self.dmarc, str(address), session.helo, session.mail_from,
                            from_values, message.raw, message.truncated,
                            self.config.policy.spf_last_resort)
        checks = [Finding("session", "ipv6", str(address)),
                  Finding("spf", auth.spf.result, auth.spf.identity)]
        checks += [Finding("dkim", d.result, d.domain) for d in auth.dkim] or [Finding("dkim", "none")]
        checks.append(Finding("dmarc", auth.dmarc.result, auth.dmarc.from_domain or auth.dmarc.reason))
        failures = ["dns-unavailable"] if auth.temp_errors else []

        identities = self._authenticated_identities(auth)
        recipients, sender = self._addressbook_keys(session, auth, checks)
        queries = {
            "ip": [("", f) for f in ip_candidates(address)],
            "domain": [("", d) for d in sorted({s for ident in identities.values()
                                                 for dom in ident for s in domain_suffixes(dom)})],
            "ab": [(r, sender) for r in recipients] if sender else [],
        }
        green = self.greenlist.prepare(budget, address, session.helo, auth)
        queries.update(green.queries)      # the same one round trip
        whitelist = []
        try:
            answers = self.store.lookup(queries)
        except StoreUnavailable as err:
            log.warning("redis unavailable: %s", err)
            failures.append("redis-unavailable")
            checks.append(Finding("redis", "unavailable"))
            answers = None
        if answers is not None:
            whitelist += self._ip_findings(answers["ip"], checks)
            whitelist += self._domain_findings(answers["domain"], identities, checks)
            whitelist += self._addressbook_findings(answers["ab"], recipients, sender, auth, checks)
        greenlist = green.conclude(answers, checks)
        auth_results = render_auth_results(self.config.policy.authserv_id, auth)
        evidence = Evidence(SessionClass.IPV6, whitelist=tuple(whitelist), greenlist=greenlist,
                            checks=tuple(checks),
                            failures=tuple(failures), auth_results=auth_results)
        return evidence, auth

    def _authenticated_identities(self, auth: AuthOutcome) -> dict:
        """Domains that authenticated, by how they did.

        "spf" is the MAIL FROM domain (the HELO name for the null sender) on an
        SPF pass, or on a pass of the configured last-resort record for a
        domain that publishes no SPF; "dmarc" is the From domain when SPF or
        DKIM passed in alignment with it (``AuthOutcome.aligned_via``).
        """
        spf_domain = auth.spf_pass_domain or (auth.spf.domain if auth.spf.last_resort == "pass"
                                              else "")
        return {
            "dkim": sorted(auth.dkim_pass_domains),
            "spf": [spf_domain] if spf_domain else [],
            "dmarc": [auth.dmarc.from_domain] if auth.aligned_via else [],
        }

    def _addressbook_keys(self, session: Session, auth: AuthOutcome, checks: list):
        if not auth.from_address:
            checks.append(Finding("addressbook", "skipped", auth.dmarc.reason or "no From address"))
            return [], ""
        if len(session.recipients) > self.config.milter.max_recipients:
            checks.append(Finding("addressbook", "skipped", "too many recipients"))
            return [], ""
        if not session.recipients:
            checks.append(Finding("addressbook", "skipped", "no recipients"))
            return [], ""
        fold = self.config.addressbook.fold_local_part
        try:
            sender = self.store.addressbook_id(normalise_address(auth.from_address, fold))
        except AddressError:
            checks.append(Finding("addressbook", "skipped", "unparseable From address"))
            return [], ""
        recipients = []
        for rcpt in session.recipients:
            try:
                recipients.append(self.store.addressbook_id(normalise_address(rcpt, fold)))
            except AddressError:
                # Nobody's addressbook can hold it, so not every recipient knows the sender.
                checks.append(Finding("addressbook", "miss", "unparseable recipient"))
                return [], ""
        return sorted(set(recipients)), sender

    @staticmethod
    def _ip_findings(hits: list, checks: list) -> list:
        if not hits:
            checks.append(Finding("ip", "miss"))
            return []
        best = max(hits, key=lambda h: int(h.field.split("/")[1]))
        finding = Finding("ip", "pass", f"{field_to_network(best.field)} source={best.source}")
        checks.append(finding)
        return [finding]

    @staticmethod
    def _domain_findings(hits: list, identities: dict, checks: list) -> list:
        found = []
        for hit in sorted(hits, key=lambda h: (h.field, h.source)):
            requirement = requirement_of(hit.value)
            ways = DOMAIN_REQUIREMENTS[:3] if requirement == "any" else (requirement,)
            how = [way for way in ways if any(covers(hit.field, d) for d in identities.get(way, ()))]
            if how:
                finding = Finding("domain", "pass",
                                  f"{hit.field} via={how[0]} source={hit.source}")
                found.append(finding)
                checks.append(finding)
            else:
                checks.append(Finding("domain", "unauthenticated",
                                      f"{hit.field} needs={requirement} source={hit.source}"))
        if not hits:
            checks.append(Finding("domain", "miss"))
        return found[:1]

    def _addressbook_findings(self, hits: list, recipients: list, sender: str,
                              auth: AuthOutcome, checks: list) -> list:
        if not sender:
            return []
        known = {hit.key for hit in hits}
        missing = sum(1 for r in recipients if r not in known)
        if missing:
            checks.append(Finding("addressbook", "miss",
                                  f"{len(recipients) - missing}/{len(recipients)} recipients know the sender"))
            return []
        via = auth.aligned_via
        if not via:
            checks.append(Finding("addressbook", "unauthenticated",
                                  f"all {len(recipients)} recipients know the sender; From not authenticated"))
            return []
        finding = Finding("addressbook", "pass", f"{len(recipients)} recipients via={via}")
        checks.append(finding)
        return [finding]
