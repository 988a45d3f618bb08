"""The thin pymilter adapter: callbacks -> Session/Message -> evaluate -> reply."""
from __future__ import annotations

import functools
import logging
import socket

import Milter

from .addresses import strip_brackets
from .evidence.auth import claimed_job_id, claims_authserv_id
from .evaluate import Evaluator, Outcome
from .logs import decision_fields, format_kv
from .membudget import JUDGING_COPIES
from .model import Action, MessageBuilder, Session, SessionClass

log = logging.getLogger("mx6milter")

# Sessions whose mail is outbound: [addressbook] learn learns from them.
OUTBOUND = (SessionClass.AUTHENTICATED, SessionClass.TRUSTED)


def safe_callback(method):
    """No exception escapes a callback: log it as a bug, then answer safely.

    A judged (IPv6) session gets a 451 4.3.0 tempfail; anything else is
    passed, because IPv4 mail must never be harmed by a fault of ours. Passed
    with CONTINUE, not ACCEPT: ACCEPT before end of message would skip the
    rest of it, and with it the removal of forged headers at eom.
    """
    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception:
            log.exception("BUG in %s callback (queue id %s)", method.__name__,
                          self.session.queue_id or "-")
            self.faulted = True
            if self.judged and not self._protocol & NO_REPLY.get(method.__name__, 0):
                self.setreply("451", "4.3.0", "Temporary local problem; please try again")
                return Milter.TEMPFAIL
            return Milter.CONTINUE      # with no reply due: eom tempfails a judged message
    return wrapper


# The callbacks whose answer is always CONTINUE (but for a fault): with protocol v6
# the MTA is told not to wait for it (SMFIP_NR_*, pymilter's @noreply), one round
# trip less per recipient, header and body chunk. connect, envfrom, data and eoh
# keep their answers (eoh may skip the body; data's answer avoids Nagle's stall).
NO_REPLY = {"envrcpt": Milter.P_NR_RCPT, "header": Milter.P_NR_HDR, "body": Milter.P_NR_BODY}


@Milter.header_leading_space
class Mx6Milter(Milter.Base):
    """One instance per SMTP connection; the decision is made in Evaluator."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.config = evaluator.config
        self.session = Session()
        self.session_class = SessionClass.LOCAL    # computed once per transaction, at MAIL FROM
        self.judged = False
        self.learning = False      # an IPv4 message read for the greenlist's IPv4 history
        self.teaching = False      # an outbound message that teaches addressbooks
        self._protocol = 0         # the negotiated SMFIP_* bits: set by negotiate(), none before
        self.message: MessageBuilder | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        """A new, empty message; the old one's bytes are given back to the memory budget."""
        if self.message is not None:
            self.message.release()
        self.faulted = False       # a callback of this transaction failed (safe_callback)
        self.message = MessageBuilder(self.config.milter.max_message_size,
                                      self.evaluator.memory.reservation())
        self.remove = []           # (name, occurrence index, job id) to delete at eom
        self.seen = {}             # header name (lower) -> occurrences so far
        self.ids = {}              # first Message-ID and From, for the journal's fingerprint

    def _macro(self, *names: str) -> str:
        for name in names:
            value = self.getsymval(name)
            if value:
                return value
        return ""

    @safe_callback
    def connect(self, hostname, family, hostaddr):
        # pymilter gives (ip, port[, flow, scope]) for inet and inet6; test harnesses a str
        client_ip = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else hostaddr
        if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(client_ip, str):
            client_ip = None
        self.session = Session(client_ip=client_ip or self._macro("{client_addr}") or None,
                               client_name=hostname or "",
                               daemon_name=self._macro("{daemon_name}"),
                               daemon_addr=self._macro("{daemon_addr}", "{if_addr}"))
        # Provisional until MAIL FROM brings {auth_authen}: a fault before then in an
        # IPv6 session must tempfail, not let the message pass unjudged.
        self.judged = self.evaluator.session_class(self.session) is SessionClass.IPV6
        return Milter.CONTINUE

    @safe_callback
    def hello(self, hostname):
        self.session.helo = hostname or ""
        return Milter.CONTINUE

    @safe_callback
    def envfrom(self, mail_from, *params):
        self._reset_message()
        self.session.mail_from = strip_brackets(mail_from)
        self.session.recipients = []
        self.session.auth_authen = self._macro("{auth_authen}")
        self.session.queue_id = self._macro("i")
        self.session_class = session_class = self.evaluator.session_class(self.session)
        self.judged = session_class is SessionClass.IPV6
        self.learning = session_class is SessionClass.IPV4 and \
            self.evaluator.greenlist.recorder is not None
        self.teaching = session_class in OUTBOUND and self.evaluator.learner is not None
        return Milter.CONTINUE

    @Milter.noreply
    @safe_callback
    def envrcpt(self, rcpt, *params):
        self.session.recipients.append(strip_brackets(rcpt))
        return Milter.CONTINUE

    def data(self):
        # Defined so that pymilter's negotiation asks for the DATA stage (libmilter
        # answers it). Postfix sends the DATA macros anyway; over TCP, with no answer
        # due, Nagle held its next packet until a delayed ACK: 40 ms per message
        # (bench/RESULTS.rst).
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")        # raw bytes: DKIM needs them exactly as sent
    @safe_callback
    def header(self, name, value):
        text_value = value.decode("utf-8", "surrogateescape")
        lower = name.lower()
        self.seen[lower] = index = self.seen.get(lower, 0) + 1
        if lower in ("message-id", "from") and index == 1:
            self.ids[lower] = text_value
        if lower == self.config.policy.verdict_header.lower():
            self.remove.append((name, index, None))
        elif lower == "authentication-results":
            self._mark_auth_results(name, index, text_value)
        if self.judged or self.learning:
            self.message.add_header(name, value)
        return Milter.CONTINUE

    def _mark_auth_results(self, name: str, index: int, value: str) -> None:
        """Mark an Authentication-Results claiming our authserv-id for removal. One in
        the form "AUTHSERV_ID/JOBID" (OpenDKIM's and OpenDMARC's AuthservIDWithJobID)
        stays if JOBID is this message's queue id, known at eom: a milter before us
        in this transaction wrote it (evidence.auth.claimed_job_id)."""
        ours = self.config.policy.authserv_id
        job = claimed_job_id(value, ours)
        if job is not None or claims_authserv_id(value, ours):
            self.remove.append((name, index, job))

    @safe_callback
    def eoh(self):
        if self.session_class is SessionClass.IPV4:
            self.evaluator.metrics.ipv4_messages.inc()
        if self.teaching:      # headers through: the message is being sent
            why_not = self.evaluator.learner.submit_message(self.session.mail_from,
                                                            self.session.recipients)
            if why_not:
                log.debug("queue id %s teaches no addressbook: %s",
                          self.session.queue_id or "-", why_not)
        if self.learning and not self.evaluator.greenlist.recorder.wants(
                [value for name, value in self.message.headers if name.lower() == "from"]):
            self.learning = False     # its domain is counted enough today: skip the body
        journal = self.evaluator.journal
        if journal is not None and self.session_class is SessionClass.IPV4:
            # Queued, never waited for: did an IPv6 fallback leave this message's fingerprint?
            journal.ipv4(self.session, self.ids.get("message-id", ""), self.ids.get("from", ""))
        if not self.judged and not self.learning:
            self.message.release()    # nothing kept: its bytes back to the memory budget now
        if not self.judged and not self.learning and not self.remove:
            return Milter.ACCEPT      # nothing to judge, learn or strip: skip the body
        return Milter.CONTINUE

    @Milter.noreply
    @safe_callback
    def body(self, chunk):
        if self.judged or self.learning:
            self.message.add_body(chunk)
        return Milter.CONTINUE

    @safe_callback
    def eom(self):
        self.session.queue_id = queue_id = self._macro("i") or self.session.queue_id
        # Reverse order: Postfix renumbers the remaining headers after each delete.
        for name, index, job in reversed(self.remove):
            if not job or job != queue_id:      # a job id is local only if it is this queue id
                self.chgheader(name, index, "")
        ids = self.ids                          # _reset_message forgets them
        try:
            if self.judged and self.faulted:    # in a callback the MTA expected no answer from
                self.setreply("451", "4.3.0", "Temporary local problem; please try again")
                return Milter.TEMPFAIL
            if not self.judged:
                if self.learning:
                    self._learn()
                return Milter.ACCEPT
            outcome = self.evaluator.evaluate(self.session, self.message.build(JUDGING_COPIES),
                                              self.session_class)
        finally:
            self._reset_message()     # nothing keeps the message after its end
        fields = decision_fields(self.session, outcome)
        log.info("%s", format_kv(fields), extra={"decision": fields})
        self.evaluator.metrics.decision(outcome.decision, outcome.evidence.checks,
                                        outcome.elapsed_ms / 1000)
        if self.evaluator.journal is not None:
            self.evaluator.journal.decision(self.session, outcome, ids.get("message-id", ""),
                                            ids.get("from", ""))
        return self._apply(outcome)

    def _learn(self) -> None:
        """Queue an IPv4 message for the history; its verdict is accept whatever happens here."""
        # Building holds the parts and the joined bytes (2); the queue then holds one copy.
        message = self.message.build(2, keep=1)
        if message.over_budget:
            log.debug("IPv4 history: memory budget spent, message not learnt")
            return
        reservation = self.message.detach()   # now the recorder's to release
        queued = False
        try:
            queued = self.evaluator.greenlist.recorder.submit(
                self.session.client_ip, self.session.helo, self.session.mail_from, message,
                reservation)
        except Exception:
            log.exception("IPv4 history: message not queued (queue id %s); accepted anyway",
                          self.session.queue_id or "-")
        finally:
            if not queued and reservation is not None:
                reservation.release()

    def _apply(self, outcome: Outcome):
        decision = outcome.decision
        if decision.action is Action.ACCEPT:
            # header_leading_space: the MTA writes "Name:" + value, so the space is ours.
            if outcome.evidence.auth_results:
                self.addheader("Authentication-Results", " " + outcome.evidence.auth_results, 0)
            if decision.header:
                self.addheader(self.config.policy.verdict_header, " " + decision.header, 0)
            return Milter.ACCEPT
        reply = decision.reply
        self.setreply(reply.code, reply.status, *reply.lines)
        return Milter.REJECT if decision.action is Action.REJECT else Milter.TEMPFAIL

    @safe_callback
    def abort(self):
        self._reset_message()
        return Milter.CONTINUE

    def close(self):
        if self.message is not None:
            self.message.release()
        return Milter.CONTINUE
