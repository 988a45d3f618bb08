"""Session + Message -> Evidence -> Decision. Used by the milter and by ``mx6ctl explain``.

The evidence sources run in one visible order (``gather``): authentication
(DNS), the whitelists and the greenlist (their Redis queries joined into one
round trip), then the pure decision."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .config import Config
from .dns import Resolver
from .evidence import whitelist
from .evidence.auth import (AuthOutcome, Dmarc, auth_findings, authenticate,
                            authenticated_identities, render_auth_results)
from .evidence.greenlist import Greenlist
from . import membudget
from .membudget import MemoryBudget
from .model import Decision, Evidence, Finding, Findings, Message, Session, SessionClass
from .policy import classify, decide, parse_client_ip
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
                 memory: MemoryBudget | None = None):
        self.config = config
        self.store = store
        self.resolver = resolver
        # The bytes held for messages being judged or learnt; the daemon keeps one
        # per process across reloads ([milter] changes need a restart anyway).
        self.memory = memory or MemoryBudget(config.milter.max_buffered_bytes)
        self.dmarc = dmarc or Dmarc()
        self.greenlist = Greenlist(config, store, resolver, self.dmarc)

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
        address = parse_client_ip(session.client_ip)
        if message.over_budget:
            # Not kept, so not judged: nothing else is gathered, it falls back.
            memory = Finding("memory", "over-budget",
                             f"max_buffered_bytes={self.config.milter.max_buffered_bytes}")
            return Evidence(SessionClass.IPV6, checks=(Finding("session", "ipv6", str(address)),
                                                       memory),
                            failures=(membudget.REASON,)), None, {}
        budget = self.resolver.budget(self.config.dns.budget)
        from_values = [value for name, value in message.headers if name.lower() == "from"]
        auth = authenticate(budget, self.dmarc, str(address), session.helo, session.mail_from,
                            from_values, message.raw, message.truncated,
                            self.config.policy.spf_last_resort)
        identities = authenticated_identities(auth)
        failures = ["dns-unavailable"] if auth.temp_errors else []

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
        found = auth_findings(address, auth) + white.skipped
        if answers is None:
            found += Findings((Finding("redis", "unavailable"),))
            whitelisted = Findings()
        else:
            whitelisted = white.conclude(answers)
        greenlisted = green.conclude(answers)
        evidence = Evidence(SessionClass.IPV6, whitelist=whitelisted.evidence,
                            greenlist=greenlisted.evidence,
                            checks=(found + whitelisted + greenlisted).checks,
                            failures=tuple(failures),
                            auth_results=render_auth_results(self.config.policy.authserv_id, auth))
        return evidence, auth, identities
