"""ARC (RFC 8617): a chain sealed last by a trusted sealer, and what that sealer recorded.

A forwarder that changes a message (a mailing list adds a footer, a mailbox provider
forwards) breaks the author's DKIM signature and SPF; if it seals the message with
ARC, its ARC-Authentication-Results (AAR) keep the results it saw on arrival. Those
records are believed only from the domains in ``[arc] trusted_sealers``, and only when
the whole chain validates (cv=pass, dkimpy's ARC verifier):

- the latest ARC-Seal's ``d=`` names the sealer; a chain sealed last by anyone else
  is not verified at all (``untrusted``: it could count for nothing);
- the newest sets sealed by trusted sealers, in a row from the latest, are read once
  (Google adds two sets; a trusted mailbox provider may forward what a trusted list
  sealed): an aligned DKIM pass, an aligned SPF pass or ``dmarc=pass`` that any of
  their AARs records for the From domain authenticates that domain "via arc";
- a validated chain from a trusted sealer is the greenlist signal ``arc`` by itself.

Keys come through the message's DNS ``Budget`` and are screened like DKIM keys
(``auth._KeyLookup``, ``dkim_key_problem``); at most MAX_ARC_SETS sets are verified.
Nothing here raises: a failure to verify is a result with a reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import takewhile
from typing import NamedTuple

import authres
import dkim
from dkim.util import parse_tag_value

from ..addresses import AddressError, domain_to_ascii
from ..dns import Budget
from ..model import Finding
from .auth import Dmarc, _DkimLog, _KeyLookup, _pvalue, _resinfo

# RFC 8617 allows 50 sets. Each costs two key lookups, two RSA verifications and a
# pass over the body (dkimpy checks every ARC-Message-Signature); real chains have
# one to five. Longer ones are not verified: the same bound as DKIM signatures.
MAX_ARC_SETS = 10
# An ARC-Authentication-Results longer than this is not parsed: authres takes about
# 4 ms a kilobyte on dense input (240 results in 7.7 KB: 36 ms), and real ones are a
# few hundred bytes. Only AARs of a validated chain from trusted sealers are parsed.
MAX_AAR_LENGTH = 4096

# An ARC header field in the raw header block: its name and its value, folded lines included.
_ARC_FIELD = re.compile(rb"(?im)^(arc-seal|arc-message-signature|arc-authentication-results)[ \t]*+:"
                        rb"([^\r\n]*+(?:\r\n[ \t][^\r\n]*+)*+)")
_AAR_INSTANCE = re.compile(r"\s*i\s*=\s*([0-9]{1,9})\s*;", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:=\[\]_/-]")


class Recorded(NamedTuple):
    """A pass for the From domain that a trusted sealer recorded in its ARC set."""
    method: str               # dkim, spf or dmarc
    domain: str               # header.d, the smtp.mailfrom domain, or header.from
    instance: int             # the ARC set (i=)
    sealer: str               # that set's ARC-Seal d=


@dataclass(frozen=True)
class ArcResult:
    result: str               # none untrusted pass fail temperror policy
    sealer: str = ""          # d= of the latest ARC-Seal, A-label; "" if unreadable
    sets: int = 0             # the chain's newest instance (i=)
    from_domain: str = ""     # the From domain the records were read for
    recorded: tuple = ()      # Recorded passes for from_domain, newest set first
    oldest_pass: int = 0      # RFC 8617 header.oldest-pass (0: every AMS validated)
    reason: str = ""

    @property
    def authenticated(self) -> bool:
        """The From domain authenticated via arc."""
        return self.result == "pass" and bool(self.recorded)


def check_arc(budget: Budget, trusted: tuple, raw: bytes, from_domain: str, checker: Dmarc,
              truncated: bool = False) -> ArcResult:
    """The ARC chain of RAW, judged for the From domain FROM_DOMAIN ("" if none)."""
    end = raw.find(b"\r\n\r\n")
    fields = arc_fields(raw[:end] if end >= 0 else raw)
    sets, sealer = latest_seal(fields)
    if not sets:
        return ArcResult("none")
    if sealer not in trusted:
        return ArcResult("untrusted", sealer, sets)
    problem = _unverifiable(sets, len(fields), truncated)
    if problem:
        return ArcResult("policy", sealer, sets, reason=problem)
    if budget.remaining() <= 0:
        return ArcResult("temperror", sealer, sets, reason="time budget spent")
    lookup, arc_log = _KeyLookup(budget), _DkimLog()
    try:
        verifier = dkim.ARC(raw, logger=arc_log, timeout=max(0.1, budget.remaining()))
        cv, data, why = verifier.verify(dnsfunc=lookup)
    except Exception:     # dkimpy's parser or internals on sets it cannot follow
        return ArcResult("fail", sealer, sets, reason="unusable ARC set")
    if lookup.temp:
        return ArcResult("temperror", sealer, sets, reason=lookup.temp)
    if cv != dkim.CV_Pass:
        return ArcResult("fail", sealer, sets, reason=_reason(why, arc_log.errors))
    run = list(takewhile(lambda r: _domain(r.get("as-domain", b"")) in trusted, data))
    if not run:           # dkimpy read another latest seal than latest_seal did: trust nothing
        return ArcResult("untrusted", _domain(data[0].get("as-domain", b"")) if data else "", sets)
    aars = [(r["instance"], _domain(r.get("as-domain", b"")), _text(r.get("aar-value", b"")))
            for r in run]
    recorded = recorded_passes(aars, from_domain, checker) if from_domain else ()
    return ArcResult("pass", sealer, sets, from_domain, recorded, oldest_pass(data))


def _unverifiable(sets: int, headers: int, truncated: bool) -> str:
    if sets > MAX_ARC_SETS or headers > 3 * MAX_ARC_SETS:
        return f"more than {MAX_ARC_SETS} ARC sets, not verified"
    if truncated:
        return "message over max_message_size, not verified"
    return ""


def arc_fields(header_block: bytes) -> list:
    """[(name in lower case, value unfolded)] of the ARC header fields in HEADER_BLOCK."""
    return [(m.group(1).lower(), m.group(2).replace(b"\r\n", b""))
            for m in _ARC_FIELD.finditer(header_block)]


def latest_seal(fields: list) -> tuple:
    """(the chain's newest instance, d= of its ARC-Seal as an A-label) from ARC_FIELDS;
    (0, "") without any ARC-Seal; the sealer is "" unless exactly one readable ARC-Seal
    has that instance. Instances are read as dkimpy reads them (its INSTANCE_RE), so
    this names the set dkimpy verifies first; no signature is looked at (cheap: most
    big providers' mail carries ARC sets, most of them from untrusted sealers)."""
    if not any(name == b"arc-seal" for name, _ in fields):
        return 0, ""
    instances = [(_instance(value), name, value) for name, value in fields]
    sets = max(instance for instance, _, _ in instances)
    seals = [value for instance, name, value in instances if instance == sets and name == b"arc-seal"]
    if len(seals) != 1:
        return sets, ""
    try:
        tags = parse_tag_value(seals[0])
    except Exception:     # InvalidTagValueList, and anything else on garbage
        return sets, ""
    return sets, _domain(tags.get(b"d", b""))


def _instance(value: bytes) -> int:
    found = dkim.ARC.INSTANCE_RE.search(value)
    if not found:
        return 0
    digits = found.group(1).lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= 9 else 10 ** 9    # far beyond any chain we verify


def oldest_pass(data: list) -> int:
    """RFC 8617 5.2: the oldest instance whose ARC-Message-Signature validates, all newer
    ones validating too; 0 when every one does. DATA newest first, as dkimpy gives it."""
    valid = [r["instance"] for r in takewhile(lambda r: r.get("ams-valid"), data)]
    if not valid or valid[-1] == 1:
        return 0
    return valid[-1]


def recorded_passes(aars: list, from_domain: str, checker: Dmarc) -> tuple:
    """The Recorded passes of FROM_DOMAIN in AARS [(instance, sealer, value)], newest
    first, each (method, domain) once: dkim=pass with header.d aligned (relaxed),
    spf=pass with smtp.mailfrom's domain aligned (relaxed), dmarc=pass with header.from
    the From domain."""
    found: dict = {}
    for instance, sealer, value in aars:
        for method, result, props in parse_aar(value):
            domain = _property_domain(method, props) if result == "pass" else ""
            if not domain or (method, domain) in found:
                continue
            if domain == from_domain if method == "dmarc" else checker.aligned(from_domain, domain, "r"):
                found[(method, domain)] = Recorded(method, domain, instance, sealer)
    return tuple(found.values())


_PASS_PROPERTY = {"dkim": "header.d", "spf": "smtp.mailfrom", "dmarc": "header.from"}


def _property_domain(method: str, props: dict) -> str:
    value = props.get(_PASS_PROPERTY.get(method, ""), "")
    return _domain(value.rpartition("@")[2]) if value else ""


def parse_aar(value: str) -> tuple:
    """((method, result, {"ptype.property": value}), ...) of one ARC-Authentication-Results
    value ("i=N; authserv-id; results"), lower-cased; () when it cannot be read."""
    if len(value) > MAX_AAR_LENGTH:
        return ()
    found = _AAR_INSTANCE.match(value)
    if not found:
        return ()
    try:
        header = authres.AuthenticationResultsHeader.parse_value(value[found.end():].strip())
        results = tuple((str(r.method).lower(), str(r.result).lower(),
                         {f"{p.type}.{p.name}".lower(): str(p.value) for p in r.properties})
                        for r in header.results)
    except Exception:     # authres raises many kinds on garbage
        return ()
    return results


def arc_finding(arc: ArcResult) -> Finding:
    """One Finding "arc" for logs and explain; a pass is the greenlist signal."""
    detail = f"sealer={arc.sealer or '?'}" if arc.result != "none" else ""
    if arc.result == "pass":
        detail += f" sets={arc.sets}"
        if arc.recorded:
            detail += f" from={arc.from_domain} recorded=" + ",".join(r.method for r in arc.recorded)
    elif arc.reason:
        detail += f" {arc.reason}"
    return Finding("arc", arc.result, detail)


def render_arc_results(arc: ArcResult) -> tuple:
    """Authentication-Results entries: ``arc=RESULT`` for a chain we verified, then each
    pass the trusted sealer recorded for the From domain, as method ``x-arc-dkim``,
    ``x-arc-spf`` or ``x-arc-dmarc`` with a comment naming the sealer and its set, so a
    later filter with another trust list does not take them for results of our own."""
    if arc.result in ("none", "untrusted"):
        return ()
    rendered = [_resinfo("arc", arc.result, "", arc.reason,
                         [("header.as-d", _pvalue(arc.sealer, last=False)),
                          ("header.oldest-pass", str(arc.oldest_pass) if arc.result == "pass" else "")])]
    for rec in arc.recorded:
        rendered.append(_resinfo(f"x-arc-{rec.method}", "pass",
                                 f"recorded by {rec.sealer} in ARC set {rec.instance}", "",
                                 [(_PASS_PROPERTY[rec.method], _pvalue(rec.domain))]))
    return tuple(rendered)


def _reason(why, errors: list) -> str:
    text = _text(why)
    if errors:
        text += ": " + errors[-1].split(" (got ")[0]
    return _UNSAFE.sub(" ", text)[:160]


def _domain(value) -> str:
    try:
        return domain_to_ascii(_text(value))
    except AddressError:
        return ""


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
