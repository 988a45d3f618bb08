"""The decision: evidence in, verdict out. Pure: no DNS, Redis, clock or sockets."""
from __future__ import annotations

import ipaddress

from . import membudget
from .config import PolicySection
from .model import Action, Decision, Evidence, Reply, Session, SessionClass, Tier
from .reply import build_reply

JUDGED = (SessionClass.IPV6,)

# Failures of ours, not of the sender's evidence: the message could not even be
# judged (not kept: [milter] max_buffered_bytes spent). A temporary failure in
# every enforcing mode, never mx6's 5xx, so that the sender retries (later, or
# over IPv4 at once); the reply says so rather than blaming the sender.
LOCAL_FAILURES = (membudget.REASON,)
LOCAL_FAILURE_REPLY = Reply("451", "4.3.1", (
    "Too busy to check this message over IPv6 now; please try again later or over IPv4",))


def _header_value(tier: Tier, evidence: Evidence, policy: PolicySection, note: str = "") -> str:
    findings = evidence.whitelist if tier is Tier.WHITELISTED else evidence.greenlist
    parts = [tier.value]
    if tier is Tier.GREENLISTED:
        parts.append("subject-to-content-filtering")
    if findings:
        parts.append("evidence=" + ",".join(str(f) for f in findings))
    if evidence.failures:
        parts.append("failures=" + ",".join(evidence.failures))
    if note:
        parts.append(note)
    parts.append(f"mode={policy.mode}")
    parts.append(f"by={policy.authserv_id}")
    return "; ".join(parts)


# Why a message falls back, and the [policy] key holding the enhanced status code
# (RFC 3463, RFC 7372) the defensive reply gives for it; mx6 mode has one, mx6_status.
FALLBACK_STATUS_KEYS = {
    "redis-unavailable": "defensive_status_redis",        # 4.3.0: our mail system
    "dns-unavailable": "defensive_status_dns",            # 4.4.3: directory server failure
    "not-authenticated": "defensive_status_unauthenticated",  # 4.7.26: no SPF or DKIM pass
    "no-positive-evidence": "defensive_status",           # 4.7.1: authenticated, not known
}


def fallback_reason(evidence: Evidence) -> str:
    """The one reason that picks the status: evidence not gathered, else authentication."""
    for failure in ("redis-unavailable", "dns-unavailable"):
        if failure in evidence.failures:
            return failure
    return "no-positive-evidence" if evidence.authenticated else "not-authenticated"


def fallback_status(policy: PolicySection, evidence: Evidence) -> tuple:
    """(reason, the [policy] key, the enhanced status code) of the fallback reply."""
    reason = fallback_reason(evidence)
    key = "mx6_status" if policy.mode == "mx6" else FALLBACK_STATUS_KEYS[reason]
    return reason, key, getattr(policy, key)


def fallback_reply(policy: PolicySection, evidence: Evidence):
    status = fallback_status(policy, evidence)[2]
    if policy.mode == "mx6":
        code, text = policy.mx6_code, policy.mx6_text
    else:
        code, text = policy.defensive_code, policy.defensive_text
    return build_reply(code, status, text, evidence.auth_results, policy.registration_url)


def decide(policy: PolicySection, evidence: Evidence) -> Decision:
    """Whitelisted beats greenlisted beats fallback; only IPv6 sessions are judged."""
    if evidence.session_class not in JUDGED:
        return Decision(Tier.BYPASS, Action.ACCEPT, reasons=(evidence.session_class.value,))
    if evidence.whitelist:
        return Decision(Tier.WHITELISTED, Action.ACCEPT,
                        reasons=tuple(str(f) for f in evidence.whitelist),
                        header=_header_value(Tier.WHITELISTED, evidence, policy))
    if evidence.greenlist:
        return Decision(Tier.GREENLISTED, Action.ACCEPT,
                        reasons=tuple(str(f) for f in evidence.greenlist),
                        header=_header_value(Tier.GREENLISTED, evidence, policy))
    reasons = evidence.failures or (fallback_reason(evidence),)
    reply = fallback_reply(policy, evidence)
    if any(reason in LOCAL_FAILURES for reason in reasons):
        reply = LOCAL_FAILURE_REPLY
    if policy.mode == "report":
        note = "action=fallback-reported; reply=" + reply.code + " " + reply.status
        return Decision(Tier.NONE, Action.ACCEPT, reasons=reasons, would_reply=reply,
                        header=_header_value(Tier.NONE, evidence, policy, note))
    action = Action.REJECT if reply.code.startswith("5") else Action.TEMPFAIL
    return Decision(Tier.NONE, action, reasons=reasons, reply=reply)


def parse_client_ip(text: str | None):
    """An ipaddress object from what the MTA gave, or None (local, unknown, garbage)."""
    if not text:
        return None
    text = text.strip().strip("[]")               # brackets, as in [IPv6:2001:db8::1]
    if text.lower().startswith("ipv6:"):          # Sendmail's {client_addr} form
        text = text[5:]
    text = text.split("%", 1)[0]                  # an IPv6 zone id
    try:
        # what ip_address() gives, without first failing as IPv4 on every IPv6 address
        return ipaddress.IPv6Address(text) if ":" in text else ipaddress.IPv4Address(text)
    except ValueError:
        return None


def client_address(session: Session):
    """The session's client address (parse_client_ip), parsed once per session: kept on
    the session for as long as its client_ip is the same text."""
    text, address = session.parsed_client_ip
    if text != session.client_ip:
        address = parse_client_ip(session.client_ip)
        session.parsed_client_ip = (session.client_ip, address)
    return address


def classify(session: Session, trusted_networks=()) -> SessionClass:
    """Which sessions are judged: only real IPv6, unauthenticated, untrusted."""
    if session.auth_authen:
        return SessionClass.AUTHENTICATED
    address = client_address(session)
    if address is None:
        return SessionClass.LOCAL
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in trusted_networks
           if network.version == address.version):
        return SessionClass.TRUSTED
    return SessionClass.IPV6 if address.version == 6 else SessionClass.IPV4
