"""The whitelists in Redis: IPv6 prefixes, authenticated domains, addressbooks.

``prepare`` says what to ask Redis (added to the decision's one lookup);
``conclude`` turns the answers into Findings. Pure apart from the store's
``addressbook_id`` (a keyed hash in privacy mode)."""
from __future__ import annotations

from dataclasses import dataclass

from ..addresses import AddressError, domain_suffixes, normalise_address
from ..entries import REQUIREMENTS, value_requirement
from ..model import Finding, Findings
from ..prefixes import field_to_network
from ..store import address_query
from .auth import AuthOutcome

AUTHENTICATED_WAYS = REQUIREMENTS[:3]     # what "any" accepts: dmarc, dkim, spf
# The From domain authenticated by a trusted ARC sealer's records (evidence/arc.py)
# counts where the From domain's own aligned authentication would.
VIA_ARC = {"dmarc": ("dmarc", "arc"), "any": (*AUTHENTICATED_WAYS, "arc")}


def covers(entry: str, domain: str) -> bool:
    """A whitelist entry covers its domain and every subdomain of it."""
    return bool(domain) and bool(entry) and (domain == entry or domain.endswith("." + entry))


def addressbook_ids(store, fold_local_part: bool, from_address: str, recipients) -> tuple:
    """(sender id, [(recipient, recipient id or None), ...]) as stored, or ("", []).

    An unparseable recipient gets None: nobody's addressbook can hold it."""
    try:
        sender = store.addressbook_id(normalise_address(from_address, fold_local_part))
    except AddressError:
        return "", []
    ids = []
    for rcpt in recipients:
        try:
            ids.append((rcpt, store.addressbook_id(normalise_address(rcpt, fold_local_part))))
        except AddressError:
            ids.append((rcpt, None))
    return sender, ids


@dataclass(frozen=True)
class PendingWhitelist:
    """One message's whitelist queries, between prepare and the Redis answer."""
    queries: dict
    identities: dict
    recipients: tuple          # recipient ids that must all know the sender
    sender: str                # "" when the addressbook rule cannot apply
    skipped: Findings          # why the addressbook was not asked (known before the lookup)
    aligned_via: str

    def conclude(self, answers: dict) -> Findings:
        found = ip_findings(answers["ip"]) + domain_findings(answers["domain"], self.identities)
        if self.sender:
            found += addressbook_findings(answers["ab"], self.recipients, self.aligned_via)
        return found


def prepare(store, address, session, auth: AuthOutcome, identities: dict,
            fold_local_part: bool, max_recipients: int) -> PendingWhitelist:
    sender, recipients, skipped = "", (), ()
    if not auth.from_address:
        skipped = (Finding("addressbook", "skipped", auth.dmarc.reason or "no From address"),)
    elif len(session.recipients) > max_recipients:
        skipped = (Finding("addressbook", "skipped", "too many recipients"),)
    elif not session.recipients:
        skipped = (Finding("addressbook", "skipped", "no recipients"),)
    else:
        sender, ids = addressbook_ids(store, fold_local_part, auth.from_address, session.recipients)
        if not sender:
            skipped = (Finding("addressbook", "skipped", "unparseable From address"),)
        elif any(rid is None for _, rid in ids):
            sender, skipped = "", (Finding("addressbook", "miss", "unparseable recipient"),)
        else:
            recipients = tuple(sorted({rid for _, rid in ids}))
    queries = {
        "ip": [address_query(address)],
        "domain": [("", d) for d in sorted({s for ways in identities.values()
                                             for dom in ways for s in domain_suffixes(dom)})],
        "ab": [(r, sender) for r in recipients] if sender else [],
    }
    return PendingWhitelist(queries, identities, recipients, sender, Findings(skipped),
                            auth.aligned_via or ("arc" if identities.get("arc") else ""))


def ip_findings(hits: list) -> Findings:
    if not hits:
        return Findings((Finding("ip", "miss"),))
    best = max(hits, key=lambda h: int(h.field.split("/")[1]))
    finding = Finding("ip", "pass", f"{field_to_network(best.field)} source={best.source}")
    return Findings((finding,), (finding,))


def domain_findings(hits: list, identities: dict) -> Findings:
    if not hits:
        return Findings((Finding("domain", "miss"),))
    checks, found = [], []
    for hit in sorted(hits, key=lambda h: (h.field, h.source)):
        requirement = value_requirement(hit.value)
        ways = VIA_ARC.get(requirement, (requirement,))
        how = [way for way in ways if any(covers(hit.field, d) for d in identities.get(way, ()))]
        if how:
            finding = Finding("domain", "pass", f"{hit.field} via={how[0]} source={hit.source}")
            found.append(finding)
            checks.append(finding)
        else:
            checks.append(Finding("domain", "unauthenticated",
                                  f"{hit.field} needs={requirement} source={hit.source}"))
    return Findings(tuple(checks), tuple(found[:1]))


def addressbook_findings(hits: list, recipients: tuple, aligned_via: str) -> Findings:
    known = {hit.key for hit in hits}
    missing = sum(1 for r in recipients if r not in known)
    if missing:
        return Findings((Finding("addressbook", "miss",
                                 f"{len(recipients) - missing}/{len(recipients)} recipients "
                                 "know the sender"),))
    if not aligned_via:
        return Findings((Finding("addressbook", "unauthenticated",
                                 f"all {len(recipients)} recipients know the sender; "
                                 "From not authenticated"),))
    finding = Finding("addressbook", "pass", f"{len(recipients)} recipients via={aligned_via}")
    return Findings((finding,), (finding,))
