"""SPF, DKIM and DMARC on top of dns.py, and the Authentication-Results header.

Every check turns hostile input into a result, never an exception:
``temperror`` only when DNS could not answer (so the message can fall back
and be retried), ``permerror`` for input that will never verify.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from dataclasses import dataclass, field

import authres
import authres.dmarc
import dkim
import dmarc
import spf
from publicsuffixlist import PublicSuffixList

from ..addresses import AddressError, domain_of, domain_to_ascii, from_addresses, split_address
from ..dns import Budget, DnsTempError
from ..model import Finding, Findings
from . import dkimcanon

log = logging.getLogger(__name__)
dkimcanon.install()     # dkimpy's relaxed body canonicalisation, without its 34x peak

# pyspf looks names up through its module-level DNSLookup. We route it, once,
# through the resolver (and time budget) of the message checked on this thread.
_spf_context = threading.local()


def _spf_lookup(name, qtype, strict=True, timeout=None):
    budget: Budget | None = getattr(_spf_context, "budget", None)
    if budget is None:
        raise spf.TempError("DNS lookup outside an mx6milter SPF check")
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
    domain: str = ""       # A-label domain checked
    scope: str = "mailfrom"  # or "helo" for the null sender
    identity: str = ""     # the MAIL FROM address, or the HELO name
    reason: str = ""
    last_resort: str = ""  # result of [policy] spf_last_resort when the domain has no SPF


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
        return {d.domain for d in self.dkim if d.result == "pass" and d.domain}

    @property
    def spf_pass_domain(self) -> str:
        return self.spf.domain if self.spf.result == "pass" else ""

    @property
    def aligned_via(self) -> str:
        """How the From domain authenticated in alignment: "dkim", "spf" or "".

        DMARC pass under the domain's own record; for a domain that publishes
        no usable record, an SPF or DKIM pass aligned in relaxed mode.
        """
        dm = self.dmarc
        if dm.result not in ("pass", "none") or not dm.from_domain:
            return ""
        return "dkim" if dm.dkim_aligned else "spf" if dm.spf_aligned else ""


def authenticated_identities(auth: AuthOutcome) -> dict:
    """Domains that authenticated, by how they did: {"dkim": [...], "spf": [...], "dmarc": [...]}.

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


def auth_findings(address, auth: AuthOutcome) -> Findings:
    """The session and authentication checks, for logs and explain: none is evidence alone."""
    checks = [Finding("session", "ipv6", str(address)),
              Finding("spf", auth.spf.result, auth.spf.identity)]
    checks += [Finding("dkim", d.result, d.domain) for d in auth.dkim] or [Finding("dkim", "none")]
    checks.append(Finding("dmarc", auth.dmarc.result, auth.dmarc.from_domain or auth.dmarc.reason))
    return Findings(tuple(checks))


# --- SPF ---------------------------------------------------------------------------


def check_spf(budget: Budget, client_ip: str, helo: str, mail_from: str,
              last_resort: str = "") -> SpfResult:
    """SPF of MAIL FROM, or of the HELO name for the null sender.

    ``last_resort`` is an SPF record evaluated (pyspf's best_guess) for a
    domain that publishes none; its result is kept apart in ``last_resort``.
    """
    if mail_from:
        scope, identity = "mailfrom", mail_from
        try:
            local, raw_domain = split_address(mail_from)
            domain = domain_to_ascii(raw_domain)
        except AddressError as err:
            return SpfResult("none", "", scope, identity, f"no usable domain: {err}")
        # pyspf splits at the first '@'; a quoted local part with '@' would fool it
        sender = f"{local if '@' not in local else 'postmaster'}@{domain}"
    else:
        scope, identity = "helo", helo
        domain = _helo_domain(helo)
        if not domain:
            return SpfResult("none", "", scope, identity, "HELO is not a domain name")
        sender = ""
    _spf_context.budget = budget
    guess = ""
    try:
        query = spf.query(i=client_ip, s=sender, h=helo or domain if sender else domain,
                          timeout=max(0.1, budget.remaining()))
        result, _code, explanation = query.check()
        if result == "none" and last_resort:
            guess = query.best_guess(last_resort)[0]
    except Exception as err:  # pyspf raises odd things on hostile records; never crash
        log.warning("SPF check of %r raised %r; treated as permerror", identity, err)
        result, explanation = "permerror", f"SPF evaluation failed: {err}"
    finally:
        _spf_context.budget = None
    return SpfResult(result.lower(), domain, scope, identity, explanation, guess.lower())


def _helo_domain(helo: str) -> str | None:
    if not helo or helo.startswith("[") or "." not in helo:
        return None
    try:
        return domain_to_ascii(helo)
    except AddressError:
        return None


# --- DKIM --------------------------------------------------------------------------


class _DkimLog:
    """A logger for dkimpy that keeps its error messages: they say why a signature failed."""

    def __init__(self):
        self.errors = []

    def error(self, msg, *args, **kwargs):
        self.errors.append(str(msg) % args if args else str(msg))

    warning = error

    def debug(self, *args, **kwargs):
        pass

    info = debug

    def isEnabledFor(self, level):
        return False


_DKIM_HEADER = re.compile(rb"(?im)^dkim-signature[ \t]*:")

# RSA verification is one pow(signature, e, n) that holds the interpreter (every
# session, IPv4 too) for as long as it runs: seconds for a 16,384-bit n and e.
# Keys are screened before dkimpy sees them. RFC 8301 asks verifiers to handle
# 1,024 to 4,096 bits; real keys use e = 65537 (sometimes 3 or 17). With these
# bounds one verification costs at most a few milliseconds.
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 4096
MAX_RSA_EXPONENT_BITS = 64
# A DKIM key record longer than this cannot hold a key within the bounds.
MAX_KEY_RECORD = 4096


def dkim_key_problem(record: bytes) -> str:
    """Why a DKIM key record must not reach the RSA arithmetic, or "" if it may.

    Only RSA keys (k=rsa, the default) are screened: an Ed25519 key is 32 bytes
    and checked by dkimpy itself. A record this cannot read is left to dkimpy,
    whose own parser then refuses it; a key whose numbers it can read but that
    lie outside the bounds is refused here, before any arithmetic."""
    if len(record) > MAX_KEY_RECORD:
        return f"key record longer than {MAX_KEY_RECORD} bytes"
    tags = {}
    for part in record.split(b";"):
        name, sep, value = part.partition(b"=")
        if sep:
            tags[name.strip().lower()] = value
    if tags.get(b"k", b"rsa").strip().lower() != b"rsa" or b"p" not in tags:
        return ""
    try:
        der = base64.b64decode(b"".join(tags[b"p"].split()), validate=True)
    except (binascii.Error, ValueError):
        return ""
    if not der:
        return ""                          # p= empty: a revoked key
    numbers = rsa_public_numbers(der)
    if numbers is None:
        return "unreadable RSA public key"
    modulus, exponent = numbers
    if not MIN_RSA_BITS <= modulus.bit_length() <= MAX_RSA_BITS:
        return (f"RSA key of {modulus.bit_length()} bits, outside "
                f"{MIN_RSA_BITS}-{MAX_RSA_BITS} (RFC 8301)")
    if exponent < 3 or exponent % 2 == 0 or exponent.bit_length() > MAX_RSA_EXPONENT_BITS:
        return f"RSA public exponent of {exponent.bit_length()} bits is not a usable exponent"
    return ""


def rsa_public_numbers(der: bytes):
    """(n, e) of a DER SubjectPublicKeyInfo or bare RSAPublicKey, or None.

    Reads lengths and converts with int.from_bytes (linear, in C): nothing here
    costs more than one pass over the bytes, however large the numbers."""
    outer = _der_items(der, 0x30)
    if outer is None or len(outer) != 1:
        return None
    items = _der_items(outer[0], None)
    if items is None:
        return None
    if len(items) == 2 and items[0][0] == 0x30 and items[1][0] == 0x03:
        bits = items[1][1]                 # SubjectPublicKeyInfo: skip the unused-bits byte
        inner = _der_items(bits[1:], 0x30) if bits[:1] == b"\x00" else None
        if inner is None or len(inner) != 1:
            return None
        items = _der_items(inner[0], None)
        if items is None:
            return None
    if len(items) != 2 or any(tag != 0x02 or not value for tag, value in items):
        return None
    return tuple(int.from_bytes(value, "big") for _tag, value in items)


def _der_items(data: bytes, expect_tag):
    """The DER elements of DATA as (tag, value), or None if DATA is not a sequence
    of whole elements. With EXPECT_TAG, the values of elements that must all have
    that tag."""
    items, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            return None
        tag, length, pos = data[pos], data[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                return None
            length, pos = int.from_bytes(data[pos:pos + count], "big"), pos + count
        if pos + length > len(data):
            return None
        items.append((tag, data[pos:pos + length]))
        pos += length
    if expect_tag is not None:
        if any(tag != expect_tag for tag, _ in items):
            return None
        return [value for _, value in items]
    return items
# Each signature costs a DNS lookup and a pass over the body; a hostile message may
# carry hundreds. Those beyond this many (from the top) are reported, not verified.
MAX_DKIM_SIGNATURES = 10
_DKIM_FAIL = ("body hash mismatch", "expired")


def check_dkim(budget: Budget, raw: bytes, truncated: bool = False) -> tuple:
    """Verify every DKIM-Signature, not only the first; one DkimResult each."""
    state = {"temp": None, "missing": False}

    def dnsfunc(name, timeout=5):
        try:
            text = name.decode("ascii") if isinstance(name, bytes) else str(name)
        except UnicodeError:
            state["missing"] = True
            return None
        try:
            records = budget.txt(text)
        except DnsTempError as err:
            state["temp"] = str(err)
            raise dkim.DnsTimeoutError(str(err)) from err
        if not records:
            state["missing"] = True
            return None
        problem = dkim_key_problem(records[0])
        if problem:
            raise dkim.KeyFormatError(problem)
        return records[0]

    dkim_log = _DkimLog()
    try:
        verifier = dkim.DKIM(raw, logger=dkim_log, timeout=max(0.1, budget.remaining()))
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    except Exception as err:
        log.info("message could not be parsed for DKIM: %r", err)
        if _DKIM_HEADER.search(raw):
            return (DkimResult("permerror", reason="message could not be parsed"),)
        return ()
    results = []
    for index in range(count):
        if truncated:
            results.append(DkimResult("policy", reason="message over max_message_size, not verified"))
            continue
        if index >= MAX_DKIM_SIGNATURES:
            results.append(DkimResult("policy", reason=f"more than {MAX_DKIM_SIGNATURES} "
                                                       "signatures, not verified"))
            continue
        if budget.remaining() <= 0:
            # Each verification is bounded (key sizes, message size); their number is
            # bounded by the time the message may take as well.
            results.append(DkimResult("temperror", reason="time budget spent"))
            continue
        state.update(temp=None, missing=False)
        dkim_log.errors.clear()
        verifier.signature_fields = {}
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            if ok:
                result, reason = "pass", ""
            elif state["temp"]:
                result, reason = "temperror", state["temp"]
            elif state["missing"]:
                result, reason = "permerror", "no key published for the selector"
            elif dkim_log.errors:
                result, reason = "permerror", f"unusable key: {dkim_log.errors[-1]}"
            else:
                result, reason = "fail", "signature did not verify"
        except dkim.DKIMException as err:
            reason = str(err)
            result = "fail" if any(word in reason for word in _DKIM_FAIL) else "permerror"
            if "body hash mismatch" in reason:
                reason = "body hash mismatch"   # without the two hashes
        except Exception as err:  # hostile signature fields reaching dkimpy's internals
            result, reason = "permerror", f"unusable signature: {err!r}"
        fields = getattr(verifier, "signature_fields", None) or {}
        results.append(DkimResult(result, _dkim_domain(fields.get(b"d", b"")),
                                  _decode(fields.get(b"s", b"")), _decode(fields.get(b"a", b"")),
                                  reason))
    return tuple(results)


def _dkim_domain(value) -> str:
    try:
        return domain_to_ascii(_decode(value))
    except AddressError:
        return ""


def _decode(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


# --- DMARC -------------------------------------------------------------------------


class Dmarc:
    """DMARC evaluation; the Public Suffix List ships inside publicsuffixlist."""

    def __init__(self):
        self.psl = PublicSuffixList()

    def org_domain(self, domain: str) -> str:
        return self.psl.privatesuffix(domain) or domain

    def aligned(self, from_domain: str, other: str, mode: str) -> bool:
        if not other or not from_domain:
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
        policy, problem = None, "no DMARC record"
        if record is not None:
            try:
                policy = dmarc.DMARC().parse_record(
                    record, domain=from_domain, org_domain=org if where != from_domain else None,
                    strict=False)
            except dmarc.Error as err:
                problem = f"unusable DMARC record: {err}"
        if policy is None:
            # No policy: still say whether SPF or DKIM aligned (relaxed), for whitelists.
            return DmarcResult("none", from_domain, "",
                               self._spf_aligned(from_domain, spf_result, "r"),
                               self._dkim_aligned(from_domain, dkim_results, "r"), problem)
        adkim = "s" if policy.adkim is dmarc.DMARCAlignment.STRICT else "r"
        aspf = "s" if policy.aspf is dmarc.DMARCAlignment.STRICT else "r"
        disposition = policy.p
        if where != from_domain and policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED:
            disposition = policy.sp
        spf_aligned = self._spf_aligned(from_domain, spf_result, aspf)
        dkim_aligned = self._dkim_aligned(from_domain, dkim_results, adkim)
        result = "pass" if spf_aligned or dkim_aligned else "fail"
        return DmarcResult(result, from_domain, disposition.name.lower(), spf_aligned, dkim_aligned)

    def _spf_aligned(self, from_domain: str, spf_result: SpfResult, mode: str) -> bool:
        return spf_result.result == "pass" and spf_result.scope == "mailfrom" and \
            self.aligned(from_domain, spf_result.domain, mode)

    def _dkim_aligned(self, from_domain: str, dkim_results: tuple, mode: str) -> bool:
        return any(d.result == "pass" and self.aligned(from_domain, d.domain, mode)
                   for d in dkim_results)

    @staticmethod
    def _find_record(budget: Budget, from_domain: str, org: str):
        for where in dict.fromkeys((from_domain, org)):
            records = [r.decode("utf-8", "replace") for r in budget.txt("_dmarc." + where)]
            records = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
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
    if addresses is None:
        return "", "unparseable From header"
    if len(addresses) != 1:
        return "", f"{len(addresses)} addresses in From"
    if domain_of(addresses[0]) is None:
        return "", "unparseable From address"
    return addresses[0], ""


def authenticate(budget: Budget, checker: Dmarc, client_ip: str, helo: str, mail_from: str,
                 from_values, raw: bytes, truncated: bool = False,
                 spf_last_resort: str = "") -> AuthOutcome:
    spf_result = check_spf(budget, client_ip, helo, mail_from, spf_last_resort)
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


# --- Authentication-Results --------------------------------------------------------


def render_auth_results(authserv_id: str, outcome: AuthOutcome) -> str:
    """The Authentication-Results header value (RFC 8601), built with authres."""
    sp = outcome.spf
    identity = {"smtp_mailfrom" if sp.scope == "mailfrom" else "smtp_helo": _safe_value(sp.identity)}
    results = [authres.SPFAuthenticationResult(
        result=sp.result,
        result_comment=f"last-resort {sp.last_resort}" if sp.last_resort else None,
        reason=_safe_reason(sp.reason) if sp.result in ("temperror", "permerror") else None,
        **{k: v for k, v in identity.items() if v})]
    if not outcome.dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    for d in outcome.dkim:
        results.append(authres.DKIMAuthenticationResult(
            result=d.result, header_d=_safe_value(d.domain) or None,
            header_s=_safe_value(d.selector) or None,
            header_a=_safe_value(d.algorithm) or None,
            reason=_safe_reason(d.reason) if d.result != "pass" and d.reason else None))
    dm = outcome.dmarc
    results.append(authres.dmarc.DMARCAuthenticationResult(
        result=dm.result, header_from=_safe_value(dm.from_domain) or None,
        reason=_safe_reason(dm.reason) if dm.reason else None,
        policy=dm.policy or None))
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return header.header_value()


def _safe_value(value: str) -> str:
    # A-R values from hostile input: printable ASCII, no quotes or comment parentheses.
    return "".join(ch for ch in value if "!" <= ch <= "~" and ch not in '"()\\;')[:200]


def _safe_reason(value: str) -> str:
    # reason="..." is a quoted string: spaces are fine; quotes and backslashes are not, and
    # ';' and parentheses go too, for the benefit of naive parsers further down the line.
    text = "".join(ch if " " <= ch <= "~" and ch not in '"\\;()' else " " for ch in value)
    return " ".join(text.split())[:160]


_COMMENT_CHAR = re.compile(r"[()\\]")
_TOKEN = re.compile(r"[^\s();]+")
_SPACE = re.compile(r"\s+")


def claims_authserv_id(value: str, authserv_id: str) -> bool:
    """Whether an incoming Authentication-Results header claims our authserv-id.

    The header counts as ours if either authres's parser or a plain reading
    of its first token (comments and quotes removed) says so, so garbage
    cannot hide a claim.
    """
    ours = authserv_id.lower().rstrip(".")
    try:
        # Only the part before the first ';' names the authserv-id; parsing a whole
        # 100 KB header of results costs authres seconds, on IPv4 mail too.
        text = value[:4096]
        parsed = authres.AuthenticationResultsHeader.parse_value(text.split(";", 1)[0] + "; none")
        if (parsed.authserv_id or "").strip().lower().rstrip(".") == ours:
            return True
    except Exception:   # authres raises many kinds on garbage: the plain reading decides
        pass
    return _first_token(value).strip('"').lower().rstrip(".") == ours


def _first_token(text: str) -> str:
    """The first word outside comments (RFC 5322 CFWS), however long or deeply nested
    the comments before it; "" if there is none. Linear in the header's length."""
    pos, depth = 0, 0
    while pos < len(text):
        if depth:
            found = _COMMENT_CHAR.search(text, pos)
            if found is None:
                return ""            # an unterminated comment hides nothing
            char, pos = found.group(), found.end()
            if char == "\\":
                pos += 1             # quoted-pair: the next character is literal
            else:
                depth += 1 if char == "(" else -1
        elif text[pos] == "(":
            depth, pos = 1, pos + 1
        elif text[pos].isspace():
            pos = _SPACE.match(text, pos).end()
        else:
            token = _TOKEN.match(text, pos)
            return token.group() if token else ""
    return ""
