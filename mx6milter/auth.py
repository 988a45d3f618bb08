"""SPF, DKIM and DMARC on top of dns.py, and the Authentication-Results header."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import authres
import authres.dmarc
import dkim
import dmarc
import spf
from publicsuffixlist import PublicSuffixList

from .addresses import AddressError, domain_of, domain_to_ascii, from_addresses
from .dns import Budget, DnsTempError

log = logging.getLogger(__name__)

# pyspf looks names up through its module-level DNSLookup. We route it, once,
# through the resolver of the message being checked on this thread.
_spf_context = threading.local()


def _spf_lookup(name, qtype, strict=True, timeout=None):
    budget: Budget = _spf_context.budget
    try:
        rdatas = budget.query(name, qtype)
    except DnsTempError as err:
        raise spf.TempError(f"DNS {err}") from err
    out = []
    for rdata in rdatas:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


spf.DNSLookup = _spf_lookup


@dataclass(frozen=True)
class SpfResult:
    result: str            # none neutral pass fail softfail temperror permerror
    domain: str = ""
    scope: str = "mailfrom"  # or "helo" for the null sender
    identity: str = ""
    reason: str = ""


@dataclass(frozen=True)
class DkimResult:
    result: str            # pass fail temperror permerror policy
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    reason: str = ""


@dataclass(frozen=True)
class DmarcResult:
    result: str            # pass fail none temperror permerror
    from_domain: str = ""
    policy: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


@dataclass(frozen=True)
class AuthOutcome:
    spf: SpfResult
    dkim: tuple = ()
    dmarc: DmarcResult = DmarcResult("none")
    from_address: str = ""   # the single RFC5322.From address, "" if not exactly one
    temp_errors: tuple = field(default=())

    @property
    def dkim_pass_domains(self) -> set:
        return {d.domain for d in self.dkim if d.result == "pass"}

    @property
    def spf_pass_domain(self) -> str:
        return self.spf.domain if self.spf.result == "pass" else ""


def check_spf(budget: Budget, client_ip: str, helo: str, mail_from: str) -> SpfResult:
    """SPF of MAIL FROM, or of the HELO name for the null sender."""
    scope = "mailfrom" if mail_from else "helo"
    identity = mail_from or helo
    domain = domain_of(mail_from) if mail_from else _helo_domain(helo)
    if not domain:
        return SpfResult("none", "", scope, identity, "no usable domain")
    _spf_context.budget = budget
    try:
        query = spf.query(i=client_ip, s=mail_from if mail_from else "", h=helo or domain,
                          timeout=max(0.1, budget.remaining()))
        result, _code, explanation = query.check()
    except Exception as err:  # pyspf raises odd things on hostile names; never crash the milter
        log.warning("SPF check of %r raised %r; treated as temperror", identity, err)
        result, explanation = "temperror", str(err)
    finally:
        _spf_context.budget = None
    return SpfResult(result.lower(), domain, scope, identity, explanation)


def _helo_domain(helo: str) -> str | None:
    if not helo or helo.startswith("[") or "." not in helo:
        return None
    try:
        return domain_to_ascii(helo)
    except AddressError:
        return None


def check_dkim(budget: Budget, raw: bytes, truncated: bool = False) -> tuple:
    """Verify every DKIM-Signature, not only the first."""
    temp_errors = []

    def dnsfunc(name, timeout=5):
        try:
            records = budget.txt(name.decode() if isinstance(name, bytes) else name)
        except DnsTempError as err:
            temp_errors.append(str(err))
            raise dkim.DnsTimeoutError(str(err)) from err
        return records[0] if records else None

    try:
        verifier = dkim.DKIM(raw, logger=logging.getLogger("mx6milter.dkimpy"),
                             timeout=max(0.1, budget.remaining()))
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    except Exception as err:
        log.info("message could not be parsed for DKIM: %r", err)
        return ()
    results = []
    for index in range(count):
        if truncated:
            results.append(DkimResult("policy", reason="message over max_message_size, not verified"))
            continue
        before = len(temp_errors)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            reason = "" if ok else "signature did not verify"
            result = "pass" if ok else "fail"
        except dkim.DKIMException as err:
            ok, result, reason = False, "permerror", str(err)
        except Exception as err:  # hostile signature fields
            ok, result, reason = False, "permerror", repr(err)
        if not ok and len(temp_errors) > before:
            result, reason = "temperror", temp_errors[-1]
        fields = getattr(verifier, "signature_fields", {}) or {}
        results.append(DkimResult(result, _decode(fields.get(b"d", b"")).lower(),
                                  _decode(fields.get(b"s", b"")), _decode(fields.get(b"a", b"")),
                                  reason))
        verifier.signature_fields = {}
    return tuple(results)


def _decode(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


class Dmarc:
    """DMARC evaluation; the Public Suffix List ships inside publicsuffixlist."""

    def __init__(self):
        self.psl = PublicSuffixList()

    def org_domain(self, domain: str) -> str:
        return self.psl.privatesuffix(domain) or domain

    def aligned(self, from_domain: str, other: str, mode: str) -> bool:
        if not other:
            return False
        if mode == "s":
            return other == from_domain
        return self.org_domain(other) == self.org_domain(from_domain)

    def check(self, budget: Budget, from_domain: str, spf_result: SpfResult,
              dkim_results: tuple) -> DmarcResult:
        org = self.org_domain(from_domain)
        try:
            record, where = self._find_record(budget, from_domain, org)
        except DnsTempError as err:
            return DmarcResult("temperror", from_domain, reason=str(err))
        if record is None:
            return DmarcResult("none", from_domain, reason="no DMARC record")
        try:
            policy = dmarc.DMARC().parse_record(record, domain=from_domain,
                                                org_domain=org if where != from_domain else None,
                                                strict=False)
        except dmarc.Error as err:
            return DmarcResult("none", from_domain, reason=f"unusable DMARC record: {err}")
        adkim = "s" if policy.adkim is dmarc.DMARCAlignment.STRICT else "r"
        aspf = "s" if policy.aspf is dmarc.DMARCAlignment.STRICT else "r"
        disposition = policy.p
        if where != from_domain and policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED:
            disposition = policy.sp
        spf_aligned = spf_result.result == "pass" and spf_result.scope == "mailfrom" and \
            self.aligned(from_domain, spf_result.domain, aspf)
        dkim_aligned = any(d.result == "pass" and self.aligned(from_domain, d.domain, adkim)
                           for d in dkim_results)
        result = "pass" if spf_aligned or dkim_aligned else "fail"
        return DmarcResult(result, from_domain, disposition.name.lower(), spf_aligned, dkim_aligned)

    @staticmethod
    def _find_record(budget: Budget, from_domain: str, org: str):
        for where in dict.fromkeys((from_domain, org)):
            records = [r.decode("utf-8", "replace") for r in budget.txt("_dmarc." + where)]
            records = [r for r in records if r.lower().replace(" ", "").startswith("v=dmarc1")]
            if len(records) == 1:
                return records[0], where
            if len(records) > 1:
                return None, where   # RFC 7489 6.6.3: several records mean none
        return None, None


def single_from_address(from_values) -> tuple:
    """(address, problem): exactly one RFC5322.From address, or why there is not one."""
    if not from_values:
        return "", "no From header"
    if len(from_values) > 1:
        return "", "several From headers"
    addresses = from_addresses(from_values)
    if len(addresses) != 1:
        return "", f"{len(addresses)} addresses in From"
    if domain_of(addresses[0]) is None:
        return "", "unparseable From address"
    return addresses[0], ""


def authenticate(budget: Budget, checker: Dmarc, client_ip: str, helo: str, mail_from: str,
                 from_values, raw: bytes, truncated: bool = False) -> AuthOutcome:
    spf_result = check_spf(budget, client_ip, helo, mail_from)
    dkim_results = check_dkim(budget, raw, truncated)
    from_address, problem = single_from_address(from_values)
    if problem:
        dmarc_result = DmarcResult("permerror", reason=problem)
    else:
        dmarc_result = checker.check(budget, domain_of(from_address), spf_result, dkim_results)
    temp = [f"spf:{spf_result.reason}"] if spf_result.result == "temperror" else []
    temp += [f"dkim:{d.reason}" for d in dkim_results if d.result == "temperror"]
    if dmarc_result.result == "temperror":
        temp.append(f"dmarc:{dmarc_result.reason}")
    return AuthOutcome(spf_result, dkim_results, dmarc_result, from_address, tuple(temp))


def render_auth_results(authserv_id: str, outcome: AuthOutcome) -> str:
    """The Authentication-Results header value (RFC 8601), built with authres."""
    spf_result = outcome.spf
    spf_kwargs = ({"smtp_mailfrom": spf_result.identity} if spf_result.scope == "mailfrom"
                  else {"smtp_helo": spf_result.identity})
    results = [authres.SPFAuthenticationResult(result=spf_result.result, **{
        k: _safe_value(v) for k, v in spf_kwargs.items() if v})]
    if not outcome.dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    for d in outcome.dkim:
        results.append(authres.DKIMAuthenticationResult(
            result=d.result, header_d=_safe_value(d.domain) or None,
            header_s=_safe_value(d.selector) or None,
            reason=_safe_value(d.reason) if d.result != "pass" and d.reason else None))
    dm = outcome.dmarc
    results.append(authres.dmarc.DMARCAuthenticationResult(
        result=dm.result, header_from=_safe_value(dm.from_domain) or None,
        reason=_safe_value(dm.reason) if dm.reason else None,
        policy=dm.policy or None))
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return header.header_value()


def _safe_value(value: str) -> str:
    # A-R values from hostile input: printable ASCII, no quotes or comment parentheses.
    return "".join(ch for ch in value if "!" <= ch <= "~" and ch not in '"()\\;')[:200]


def claims_authserv_id(value: str, authserv_id: str) -> bool:
    """Whether an incoming Authentication-Results header claims our authserv-id.

    Unparseable headers are judged by their first token, so garbage cannot hide a claim.
    """
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(value)
        claimed = parsed.authserv_id or ""
    except Exception:
        claimed = value.strip().split(";", 1)[0].split(None, 1)[0] if value.strip() else ""
    return claimed.strip().lower().rstrip(".") == authserv_id.lower()
