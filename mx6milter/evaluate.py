"""Session + Message -> Evidence -> Decision. Used by the milter and by ``mx6ctl explain``.

The evidence sources run in one visible order (``gather``): authentication
(DNS), ARC from trusted sealers (DNS), the whitelists and the greenlist (their
Redis queries joined into one round trip), then the pure decision."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .config import Config
from .dns import Resolver
from .evidence import whitelist
from .evidence.arc import ArcResult, arc_finding, check_arc, render_arc_results
from .evidence.auth import (AuthOutcome, Dmarc, auth_findings, authenticate, load_public_suffix_list,
                            authenticated_identities, render_auth_results)
from .evidence.dnswl import Dnswl, Listing, render_dnswl_results
from .evidence.greenlist import Greenlist
from .evidence.learned import AddressbookLearner
from .metrics import Metrics
from .journal import Journal
from . import membudget
from .membudget import MemoryBudget
from .model import Decision, Evidence, Finding, Findings, Message, Session, SessionClass
from .policy import classify, client_address, decide
from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    evidence: Evidence
    decision: Decision
    auth: AuthOutcome | None
    elapsed_ms: float
    identities: dict = field(default_factory=dict)   # the authenticated domains the whitelists used


class Evaluator:
    def __init__(self, config: Config, store: Store, resolver: Resolver, dmarc: Dmarc | None = None,
                 metrics: Metrics | None = None, memory: MemoryBudget | None = None):
        self.config = config
        self.metrics = metrics or Metrics()   # counted by the milter; served by the daemon
        self.store = store
        self.resolver = resolver
        # The bytes held for messages being judged or learnt; the daemon keeps one
        # per process across reloads ([milter] changes need a restart anyway).
        self.memory = memory or MemoryBudget(config.milter.max_buffered_bytes)
        self.dmarc = dmarc or Dmarc(load_public_suffix_list(config.policy.psl_file,
                                                            config.where("policy", "psl_file")))
        self.greenlist = Greenlist(config, store, resolver, self.dmarc)
        self.dnswl = Dnswl(config.dnswl)
        # outbound mail teaches addressbooks (the milter hands it over)
        self.learner = AddressbookLearner(store, config.addressbook) \
            if config.addressbook.learn else None
        # What became of each decision (mx6ctl report, why); written off the reply path.
        self.journal = Journal(store, config.report, on_recovered=self.metrics.recovered) \
            if config.report.record else None

    def evaluate(self, session: Session, message: Message,
                 session_class: SessionClass | None = None) -> Outcome:
        """The decision for one message. SESSION_CLASS, when the caller already has it
        (the milter computes it once per transaction), is not computed again."""
        started = time.monotonic()
        if session_class is None:
            session_class = self.session_class(session)
        evidence, auth, identities = self.gather(session, message, session_class)
        decision = decide(self.config.policy, evidence)
        return Outcome(evidence, decision, auth, (time.monotonic() - started) * 1000, identities)

    def session_class(self, session: Session) -> SessionClass:
        return classify(session, self.config.policy.trusted_networks)

    def gather(self, session: Session, message: Message, session_class: SessionClass):
        """(Evidence, AuthOutcome or None, authenticated identities) for one message."""
        if session_class is not SessionClass.IPV6:
            return Evidence(session_class, checks=(Finding("session", session_class.value),)), None, {}
        address = client_address(session)
        client = str(address)       # written out once: for SPF and the findings
        if message.over_budget:
            # Not kept, so not judged: nothing else is gathered, it falls back.
            memory = Finding("memory", "over-budget",
                             f"max_buffered_bytes={self.config.milter.max_buffered_bytes}")
            return Evidence(SessionClass.IPV6, checks=(Finding("session", "ipv6", client),
                                                       memory),
                            failures=(membudget.REASON,)), None, {}
        budget = self.resolver.budget(self.config.dns.budget)
        from_values = [value for name, value in message.headers if name.lower() == "from"]
        auth = authenticate(budget, self.dmarc, client, session.helo, session.mail_from,
                            from_values, message.raw, message.truncated,
                            self.config.policy.spf_last_resort)
        arc = self.check_arc(budget, message, auth)
        identities = authenticated_identities(auth)
        if arc.authenticated:
            identities["arc"] = [arc.from_domain]
        listing = (self.dnswl.check(budget, address, auth.dkim_pass_domains)
                   if self.dnswl.enabled else Listing())
        failures = ["dns-unavailable"] if auth.temp_errors or listing.temperror \
            or arc.result == "temperror" else []

        white = whitelist.prepare(self.store, address, session, auth, identities,
                                  self.config.addressbook.fold_local_part,
                                  self.config.milter.max_recipients)
        green = self.greenlist.prepare(budget, address, session.helo, auth)
        try:
            answers = self.store.lookup({**white.queries, **green.queries})   # one round trip
        except StoreUnavailable as err:
            log.warning("redis unavailable: %s", err)
            failures.append("redis-unavailable")
            answers = None
        arc_checks = Findings((arc_finding(arc),)) if self.config.arc.trusted_sealers else Findings()
        found = auth_findings(client, auth) + arc_checks + white.skipped
        if answers is None:
            found += Findings((Finding("redis", "unavailable"),))
            whitelisted = listing.findings
        else:
            whitelisted = listing.findings + white.conclude(answers)
        arc_signals = tuple(f for f in arc_checks.checks if f.result == "pass") \
            if self.config.arc.greenlist else ()
        greenlisted = green.conclude(answers, listing.signals + arc_signals)
        evidence = Evidence(SessionClass.IPV6, whitelist=whitelisted.evidence,
                            greenlist=greenlisted.evidence,
                            checks=(found + whitelisted + greenlisted).checks,
                            failures=tuple(failures),
                            auth_results=render_auth_results(
                                self.config.policy.authserv_id, auth,
                                render_arc_results(arc) + render_dnswl_results(listing)),
                            authenticated=bool(auth.dkim_pass_domains or auth.spf_pass_domain
                                               or arc.authenticated))
        return evidence, auth, identities

    def check_arc(self, budget, message: Message, auth: AuthOutcome) -> ArcResult:
        """The ARC chain, when [arc] trusted_sealers names any sealer."""
        trusted = self.config.arc.trusted_sealers
        if not trusted:
            return ArcResult("none")
        return check_arc(budget, trusted, message.raw, auth.dmarc.from_domain if auth.from_address else "",
                         self.dmarc, message.truncated)
