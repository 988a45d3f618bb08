"""What became of each decision: the journal that ``mx6ctl report`` and ``why`` read.

For every judged (IPv6) decision the milter hands the journal a small record;
a background thread writes it to Redis in one pipelined round trip (the
stream of recent decisions, the hour's counters, the capped lists of
senders, and for a fallback its fingerprint). For every IPv4 message it
hands over the message's fingerprint; the thread asks Redis whether an IPv6
fallback left it, and if so counts the message recovered with its delay.

The milter's reply never waits for any of this: ``submit`` only appends to a
bounded queue (beyond ``[report] queue_size`` records are dropped and
counted), and every Redis failure is logged and forgotten. Redis down changes
nothing for IPv4 mail, and nothing for the IPv6 verdicts either.

The fingerprint is a hash of the Message-ID, the From header, the envelope
sender and the sorted recipients: what a sender keeps when it retries the
same message over IPv4 after our 4xx. The sender of a fallback, for the list
of those that never come back, is its authenticated From domain ("-" when
none authenticated) and its client /48.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import ipaddress
import json
import socket
import time

from .evidence.background import BackgroundQueue
from .model import Action, Finding, Session, Tier
from .policy import client_address

MAX_FIELD = 1000         # characters of one stream field (a HELO, a From header)
MAX_CHECKS = 100         # checks kept per decision
MAX_RECIPIENTS = 50      # recipients shown per decision (the fingerprint uses all)
DECISION_BOARDS = ("domain", "net", "helo")   # senders without evidence, by what identifies them


def fingerprint(message_id: str, header_from: str, mail_from: str, recipients) -> str:
    """The same message on its retry: Message-ID, From header, envelope sender and
    recipients (case-folded, sorted, duplicates dropped)."""
    parts = [" ".join(message_id.split()), " ".join(header_from.split()), mail_from.lower(),
             *sorted({r.lower() for r in recipients})]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def network48(session: Session) -> str:
    """The client's /48, the unit a site usually gets; "" for no IPv6 address. The address
    as the decision read it (policy.client_address): an IPv4-mapped one is IPv4 there."""
    address = client_address(session)
    if address is None or address.version != 6 or address.ipv4_mapped:
        return ""
    return str(ipaddress.ip_network(f"{address}/48", strict=False))


def _text(value: str, limit: int = MAX_FIELD) -> str:
    return "".join(ch if ch.isprintable() else "_" for ch in value)[:limit]


def authenticated_ways(outcome) -> list:
    """How the From domain authenticated: any of "dmarc", "dkim", "spf" (for
    ``mx6ctl domain add --require``), strongest first."""
    auth = outcome.auth
    domain = auth.dmarc.from_domain if auth is not None else ""
    if not domain:
        return []
    identities = outcome.identities
    return [way for way in ("dmarc", "dkim", "spf") if domain in identities.get(way, ())]


def lacked(checks) -> list:
    """The checks that did not pass, as kind=result, each once."""
    out: list = []
    for finding in checks:
        if finding.result != "pass" and finding.kind != "session":
            item = f"{finding.kind}={finding.result}"
            if item not in out:
                out.append(item)
    return out


class Journal(BackgroundQueue):
    """Writes decisions and IPv4 fingerprints to Redis from one background thread
    (background.py: started on demand, ended when idle, so a reload (a new Evaluator,
    a new Journal) leaks nothing, and a forked worker process starts its own).

    One record a round trip: ``[report] queue_size`` records wait at most. The
    counters are for the metrics module and tests; ``dropped`` (the queue was
    full) and ``failed`` (Redis failed, or a bug) count records not written.
    """
    what = "journal"
    full_warning = ("{what}: queue full, {dropped} records not written so far "
                    "(mx6ctl report undercounts)")
    redis_warning = ("{what}: Redis: {error}; {failed} records not written so far "
                     "(mx6ctl report undercounts)")
    bug_message = "BUG in the {what} (record not written)"

    def __init__(self, store, section, clock=time.time, idle_seconds: float = 10.0,
                 on_recovered=None):
        super().__init__(section.queue_size, idle_seconds=idle_seconds)
        self.store = store
        self.on_recovered = on_recovered   # called with the delay (metrics.Metrics.recovered)
        self.section = section
        self.clock = clock
        self.host = socket.gethostname()
        self.written = 0          # decisions written
        self.fallbacks = 0        # fingerprints left by IPv6 fallbacks
        self.recovered = 0        # IPv4 messages that were earlier fallbacks
        self.recovery_delays: collections.deque = collections.deque(maxlen=1000)

    # --- the milter's side: never blocks, never raises ---------------------------

    def decision(self, session: Session, outcome, message_id: str, header_from: str) -> bool:
        """Queue one judged decision (a copy of SESSION: the milter reuses its own for the
        connection's next transaction)."""
        session = dataclasses.replace(session, recipients=list(session.recipients))
        return self.submit((self._write_decision, (session, outcome, message_id, header_from,
                                                   self.clock())))

    def ipv4(self, session: Session, message_id: str, header_from: str) -> bool:
        """Queue one IPv4 message's fingerprint, to count it if it recovers a fallback."""
        digest = fingerprint(message_id, header_from, session.mail_from, session.recipients)
        return self.submit((self._write_ipv4, (digest,)))

    def handle(self, items: list) -> None:
        for write, args in items:
            write(*args)

    # --- the thread's side --------------------------------------------------------

    def _write_decision(self, session: Session, outcome, message_id: str, header_from: str,
                        when: float) -> None:
        decision = outcome.decision
        entry = self.entry(session, outcome, header_from, when)
        counters = [f"decision:{decision.tier.value}:{decision.action.value}"]
        if decision.tier is Tier.NONE:
            counters += [f"reason:{reason}" for reason in decision.reasons]
        else:
            kinds = {f.kind for f in (outcome.evidence.whitelist or outcome.evidence.greenlist)}
            counters += [f"evidence:{decision.tier.value}:{kind}" for kind in sorted(kinds)]
        boards, fallback = [], None
        if decision.tier is Tier.NONE:
            boards = self.boards(session, outcome)
        if decision.action is not Action.ACCEPT:
            counters.append("fallbacks")
            domain = outcome.auth.dmarc.from_domain if authenticated_ways(outcome) else "-"
            sender = f"{domain} {network48(session) or '-'}"
            fallback = (fingerprint(message_id, header_from, session.mail_from,
                                    session.recipients), sender)
            boards.append(("fallbacks", sender, ""))
        self.store.record_decision(when, entry, counters, boards, fallback, self.section)
        self.written += 1
        if fallback is not None:
            self.fallbacks += 1

    def _write_ipv4(self, digest: str) -> None:
        found = self.store.recover(digest, self.clock(), self.section)
        if found is not None:
            self.recovered += 1
            self.recovery_delays.append(found[0])
            if self.on_recovered is not None:
                self.on_recovered(found[0])

    def entry(self, session: Session, outcome, header_from: str, when: float) -> dict:
        """The stream entry: everything mx6ctl why prints."""
        decision = outcome.decision
        reply = decision.reply or decision.would_reply
        checks = outcome.evidence.checks[:MAX_CHECKS]
        return {
            "t": f"{when:.3f}", "host": _text(self.host), "qid": _text(session.queue_id),
            "client": _text(session.client_ip or ""), "helo": _text(session.helo),
            "from": _text(session.mail_from), "hfrom": _text(header_from),
            "rcpts": _text(" ".join(session.recipients[:MAX_RECIPIENTS]), 4 * MAX_FIELD),
            "nrcpts": str(len(session.recipients)),
            "tier": decision.tier.value, "action": decision.action.value,
            "reasons": _text(" ".join(decision.reasons), 4 * MAX_FIELD),
            "reply": f"{reply.code} {reply.status}" if reply else "",
            "would": "1" if decision.would_reply else "",
            "checks": json.dumps([[f.kind, f.result, _text(f.detail)] for f in checks]),
            "ms": f"{outcome.elapsed_ms:.1f}",
        }

    def boards(self, session: Session, outcome) -> list:
        """(board, sender, details) of a message without evidence, by From domain,
        client /48 and HELO; the details say what it lacked and what would accept it."""
        auth = outcome.auth
        domain = auth.dmarc.from_domain if auth is not None else ""
        net = network48(session)
        helo = _text(session.helo.strip().rstrip(".").lower(), 255)
        details = json.dumps({"domain": domain, "ways": authenticated_ways(outcome), "net": net,
                              "helo": helo, "lacked": lacked(outcome.evidence.checks)[:30],
                              "last": int(self.clock())})
        return [(board, sender, details) for board, sender in zip(DECISION_BOARDS,
                                                                  (domain, net, helo)) if sender]


def parse_checks(text: str) -> list:
    """The stream's checks back as Findings; garbage gives an empty list."""
    try:
        return [Finding(*(str(part) for part in item[:3])) for item in json.loads(text)
                if isinstance(item, list) and len(item) >= 2]
    except (ValueError, TypeError):
        return []
