"""SPF, DKIM and DMARC on top of dns.py, and the Authentication-Results header.

Every check turns hostile input into a result, never an exception:
``temperror`` only when DNS could not answer (so the message can fall back
and be retried), ``permerror`` for input that will never verify.
"""
from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import re
import threading
from dataclasses import dataclass, field

import authres
import authres.dmarc
import dkim
import idna
import spf
from publicsuffixlist import PublicSuffixList

from ..addresses import AddressError, domain_of, domain_to_ascii, from_addresses, strip_brackets
from ..config import ConfigError
from ..dns import Budget, DnsTempError
from ..model import Finding, Findings
from . import dkimcrypto
from .dmarc_record import is_dmarc_record, parse_record

dkimcrypto.install()        # dkimpy's integer conversions in C, parsed keys kept (dkimcrypto.py)

log = logging.getLogger(__name__)

# pyspf looks names up through its module-level DNSLookup. We route it, once,
# through the resolver (and time budget) of the message checked on this thread.
_spf_context = threading.local()


def _spf_lookup(name, qtype, strict=True, timeout=None):
    budget: Budget | None = getattr(_spf_context, "budget", None)
    if budget is None:
        raise spf.TempError("DNS lookup outside an mx6milter SPF check")
    _spf_context.used.append((name, qtype))
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


def auth_findings(client: str, auth: AuthOutcome) -> Findings:
    """The session and authentication checks, for logs and explain: none is evidence alone.
    CLIENT: the client address as text."""
    checks = [Finding("session", "ipv6", client),
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
            local, domain = _spf_sender(mail_from)
        except AddressError as err:
            return SpfResult("none", "", scope, identity, f"no usable domain: {err}")
        sender = f"{local}@{domain}"
    else:
        scope, identity = "helo", helo
        domain = _helo_domain(helo)
        if not domain:
            return SpfResult("none", "", scope, identity, "HELO is not a domain name")
        sender = ""
    # A repeat sender: the result is kept for as long as every DNS answer it used.
    key = ("spf", client_ip, mail_from, helo, last_resort)
    kept = budget.resolver.recall(key)
    if kept is not None:
        return kept
    _spf_context.budget, _spf_context.used = budget, []
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
    outcome = SpfResult(result.lower(), domain, scope, identity, explanation, guess.lower())
    if outcome.result != "temperror" and _spf_context.used:
        resolver = budget.resolver
        resolver.remember(key, min(resolver.expiry(n, t) for n, t in _spf_context.used), outcome)
    return outcome


def _spf_sender(mail_from: str) -> tuple:
    """(local part, A-label domain) of MAIL FROM for SPF; raises AddressError.

    An empty local part is "postmaster" (RFC 7208 4.3), as is one with an '@'
    (pyspf splits at the first one). Spaces are kept for the %{l} macros (the
    RFC 7208 suite's "Macro Error@..."); control characters, '<', '>',
    undecodable bytes or more than 64 characters make the address unusable.
    """
    address = strip_brackets(mail_from)
    local, at, raw_domain = address.rpartition("@")
    if not at or not raw_domain:
        raise AddressError(f"{address[:100]!r}: expected local-part@domain")
    if re.search(r"[<>\x00-\x1f\x7f]", local) or len(local) > 64:
        raise AddressError(f"{address[:100]!r}: bad local part")
    try:
        local.encode("utf-8")
    except UnicodeError:
        raise AddressError(f"{address[:100]!r}: local part is not UTF-8") from None
    domain = domain_to_ascii(raw_domain)
    return (local if local and "@" not in local else "postmaster"), domain


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
    return _key_record_problem(bytes(record))


# The screen runs for every signature, cached parse or not (dkimcrypto.py); the same
# record text always gets the same answer. At most KEY_PROBLEMS_KEPT records of at
# most MAX_KEY_RECORD bytes: 2 MB.
KEY_PROBLEMS_KEPT = 512


@functools.lru_cache(maxsize=KEY_PROBLEMS_KEPT)
def _key_record_problem(record: bytes) -> str:
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


class _KeyLookup:
    """dkimpy's dnsfunc for one signature: the key through the message's budget,
    screened before dkimpy sees it, and why it could not be had."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.temp = ""          # a temporary DNS failure's text
        self.missing = False    # no key published (or a name that cannot be one)

    def __call__(self, name, timeout=5):
        try:
            text = name.decode("ascii") if isinstance(name, bytes) else str(name)
        except UnicodeError:
            self.missing = True
            return None
        try:
            records = self.budget.txt(text)
        except DnsTempError as err:
            self.temp = str(err)
            raise dkim.DnsTimeoutError(str(err)) from err
        if not records:
            self.missing = True
            return None
        problem = dkim_key_problem(records[0])
        if problem:
            raise dkim.KeyFormatError(problem)
        return records[0]


def check_dkim(budget: Budget, raw: bytes, truncated: bool = False) -> tuple:
    """Verify every DKIM-Signature, not only the first; one DkimResult each."""
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
        elif index >= MAX_DKIM_SIGNATURES:
            results.append(DkimResult("policy", reason=f"more than {MAX_DKIM_SIGNATURES} "
                                                       "signatures, not verified"))
        elif budget.remaining() <= 0:
            # Each verification is bounded (key sizes, message size); their number is
            # bounded by the time the message may take as well.
            results.append(DkimResult("temperror", reason="time budget spent"))
        else:
            results.append(_verify_one(verifier, index, _KeyLookup(budget), dkim_log))
    return tuple(results)


def _verify_one(verifier, index: int, lookup: _KeyLookup, dkim_log: _DkimLog) -> DkimResult:
    """The result of signature INDEX, from dkimpy's answer, its exception or its log."""
    dkim_log.errors.clear()
    verifier.signature_fields = {}
    try:
        if verifier.verify(idx=index, dnsfunc=lookup):
            result, reason = "pass", ""
        elif lookup.temp:
            result, reason = "temperror", lookup.temp
        elif lookup.missing:
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
    return DkimResult(result, _dkim_domain(fields.get(b"d", b"")), _decode(fields.get(b"s", b"")),
                      _decode(fields.get(b"a", b"")), reason)


def _dkim_domain(value) -> str:
    try:
        return domain_to_ascii(_decode(value))
    except AddressError:
        return ""


def _decode(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


# --- DMARC -------------------------------------------------------------------------


DEBIAN_PSL = "/usr/share/publicsuffix/public_suffix_list.dat"   # Debian's publicsuffix package
MAX_PSL_BYTES = 16 << 20         # the list is about 250 KB; a larger file is not one


def load_public_suffix_list(path: str = "", where: str = "") -> PublicSuffixList:
    """The Public Suffix List of ``[policy] psl_file``: PATH, or for "" Debian's copy
    (kept current by apt) when the publicsuffix package is installed, else the copy
    inside publicsuffixlist (as old as that package). A file that cannot be read, is
    too large, or does not know ``co.uk`` is a ConfigError (WHERE: its "FILE:LINE: ")."""
    chosen = path or (DEBIAN_PSL if os.path.exists(DEBIAN_PSL) else "")
    if not chosen:
        return PublicSuffixList()
    try:
        with open(chosen, "rb") as handle:
            data = handle.read(MAX_PSL_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{where}[policy] psl_file = {chosen!r}: cannot read: "
                          f"{err.strerror or err}") from None
    psl = PublicSuffixList(data.splitlines()) if len(data) <= MAX_PSL_BYTES else None
    if psl is None or psl.privatesuffix("www.example.co.uk") != "example.co.uk":
        raise ConfigError(f"{where}[policy] psl_file = {chosen!r}: not a Public Suffix List")
    return psl


# Organisational domains kept per Dmarc (so per list): at most this many domain names of
# at most 253 characters, about 1 MB.
ORG_DOMAINS_KEPT = 2048


class Dmarc:
    """DMARC evaluation, with organisational domains from PSL (load_public_suffix_list)."""

    def __init__(self, psl: PublicSuffixList | None = None):
        self.psl = psl or load_public_suffix_list()
        # A decision asks for about five (alignment of each identity, the record's
        # place); the answer depends on the domain and this list only.
        self._org_domains = functools.lru_cache(maxsize=ORG_DOMAINS_KEPT)(self._lookup_org_domain)

    def org_domain(self, domain: str) -> str:
        return self._org_domains(domain)

    def _lookup_org_domain(self, domain: str) -> str:
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
        if where is not None and record is None:
            problem = "several DMARC records"
        elif record is not None:
            policy = parse_record(record)
            if not policy.usable:
                problem = f"unusable DMARC record: {policy.problems[-1]}"
                policy = None
        if policy is None:
            # No policy: still say whether SPF or DKIM aligned (relaxed), for whitelists.
            return DmarcResult("none", from_domain, "",
                               self._spf_aligned(from_domain, spf_result, "r"),
                               self._dkim_aligned(from_domain, dkim_results, "r"), problem)
        disposition = policy.policy if where == from_domain else policy.subdomain_policy
        spf_aligned = self._spf_aligned(from_domain, spf_result, policy.aspf)
        dkim_aligned = self._dkim_aligned(from_domain, dkim_results, policy.adkim)
        result = "pass" if spf_aligned or dkim_aligned else "fail"
        return DmarcResult(result, from_domain, disposition, spf_aligned, dkim_aligned)

    def _spf_aligned(self, from_domain: str, spf_result: SpfResult, mode: str) -> bool:
        # The SPF identity is the MAIL FROM domain, or for the null sender the HELO
        # name (RFC 7208 2.4, which RFC 7489 uses): check_spf gives scope "helo"
        # only for the null sender.
        return spf_result.result == "pass" and spf_result.scope in ("mailfrom", "helo") and \
            self.aligned(from_domain, spf_result.domain, mode)

    def _dkim_aligned(self, from_domain: str, dkim_results: tuple, mode: str) -> bool:
        return any(d.result == "pass" and self.aligned(from_domain, d.domain, mode)
                   for d in dkim_results)

    @staticmethod
    def _find_record(budget: Budget, from_domain: str, org: str):
        """(record text, where it was found); (None, where) for several records there
        (RFC 7489 6.6.3 step 4: no DMARC); (None, None) for none at either name.
        A TXT record not starting with exactly v=DMARC1 is not a DMARC record."""
        for where in dict.fromkeys((from_domain, org)):
            records = [r for r in budget.txt("_dmarc." + where) if is_dmarc_record(r)]
            if len(records) == 1:
                return records[0].decode("utf-8", "replace"), where
            if len(records) > 1:
                return None, where
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


def render_auth_results(authserv_id: str, outcome: AuthOutcome, extra: tuple = ()) -> str:
    """The Authentication-Results header value (RFC 8601): one line of printable ASCII.

    Every identity taken from the session or the message is written as RFC 8601's
    pvalue allows (``_pvalue``): bare when it is a token or local-part@domain, else a
    quoted-string, so that a parser reads back exactly the identity. ``;`` never
    appears inside a value (see ``_pvalue``), so even a naive split at ``;`` finds
    the results we wrote and nothing else. At most MAX_AUTH_RESULTS_DKIM DKIM results
    are listed, verified ones first, then one ``dkim=policy`` counting the rest; the
    whole stays within MAX_AUTH_RESULTS_LENGTH, far below libmilter's limit. EXTRA are
    other sources' results, already rendered and bounded (e.g. ``arc.render_arc_results``).
    """
    sp = outcome.spf
    comment = f"last-resort {_word(sp.last_resort)}" if sp.last_resort else ""
    results = [_resinfo("spf", sp.result, comment,
                        sp.reason if sp.result in ("temperror", "permerror") else "",
                        [("smtp.mailfrom" if sp.scope == "mailfrom" else "smtp.helo",
                          _identity(sp))])]
    dm = outcome.dmarc
    dmarc_result = _resinfo("dmarc", dm.result, "", dm.reason,
                            [("header.from", _pvalue(dm.from_domain, last=False)),
                             ("policy.dmarc", _pvalue(dm.policy))])
    # The verified signatures first (a stable sort keeps their order), at most
    # MAX_AUTH_RESULTS_DKIM of them, then one result counting the rest.
    signatures = sorted(outcome.dkim, key=lambda d: d.result == "policy")
    dkim_results = [_resinfo("dkim", d.result, "", d.reason if d.result != "pass" else "",
                             [("header.d", _pvalue(d.domain, last=False)),
                              ("header.a", _pvalue(d.algorithm, last=False)),
                              ("header.s", _pvalue(d.selector))])
                    for d in signatures[:MAX_AUTH_RESULTS_DKIM]] or ["dkim=none"]
    while True:
        shown = len(dkim_results) if outcome.dkim else 0
        hidden = signatures[shown:]
        summary = []
        if hidden:
            unverified = all(d.result == "policy" for d in hidden)
            summary = [_resinfo("dkim", "policy", "", f"{len(hidden)} more signatures, "
                                f"{'not verified' if unverified else 'not listed'}", [])]
        value = "; ".join([authserv_id.lower()] + results + dkim_results + summary + [dmarc_result]
                          + list(extra))
        if len(value) <= MAX_AUTH_RESULTS_LENGTH or not shown:
            return value
        dkim_results.pop()          # hostile long values: fewer listed, all counted


# libmilter refuses a header (smfi_addheader/smfi_insheader fail, pymilter raises) when
# its name and value, each with a NUL, exceed MILTER_MAX_DATA_SIZE, 65,535 bytes
# (mi_wr_cmd in libmilter/comm.c; only a larger size negotiated with the MTA raises it).
# A message with 1,100 DKIM signatures made a 66 KB header: BUG, 451 4.3.0. The header
# we add lists at most this many DKIM results and stays far below the limit.
MAX_AUTH_RESULTS_DKIM = MAX_DKIM_SIGNATURES
MAX_AUTH_RESULTS_LENGTH = 8192


def _resinfo(method: str, result: str, comment: str, reason: str, properties) -> str:
    """method=result (comment) reason=... ptype.property=pvalue ...; empty values left out."""
    text = f"{method}={_word(result) or 'permerror'}"
    if comment:
        text += f" ({comment})"
    reason = _safe_reason(reason)
    if reason:
        text += " reason=" + (reason if _RFC2045_TOKEN.fullmatch(reason) else f'"{reason}"')
    return text + "".join(f" {name}={value}" for name, value in properties if value)


def _identity(sp: SpfResult) -> str:
    """The SPF identity as a pvalue: the MAIL FROM address or the HELO name as given if
    it can be written faithfully; else with its domain in A-label form; else only
    ``@domain`` (RFC 8601 lets the local part go) or, for HELO, the A-label name."""
    written = _pvalue(sp.identity)
    if written or not sp.domain:
        return written
    if sp.scope == "mailfrom":
        local = sp.identity.rpartition("@")[0]
        return (_pvalue(f"{local}@{sp.domain}") if local else "") or _pvalue("@" + sp.domain)
    return _pvalue(sp.domain)


# RFC 2045 token; RFC 5322 dot-atom; a quoted-string (qtext, blanks, quoted-pairs).
_RFC2045_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_BARE_PVALUE = re.compile(rf'(?:(?:{_DOT_ATOM}|"(?:[ \x21\x23-\x5b\x5d-\x7e]|\\[ -~])*")?@)?'
                          rf"{_DOT_ATOM}")
# RFC 5321 limits a path to 256 octets; anything longer is not an address.
MAX_PVALUE = 320


def _pvalue(value: str, last: bool = True) -> str:
    """VALUE as an RFC 8601 pvalue, or "" if it cannot be written faithfully.

    Bare when it is a token or [local-part]@domain (a quoted local part included);
    otherwise, if LAST (the property ends its result: authres reads a quoted-string
    value only there), a quoted-string of the whole value with '"' and '\\'
    escaped. Never written: a value with ';' (a naive parser would split the result
    there, and a hostile sender could make it read "dkim=pass"), with characters
    other than printable ASCII, or longer than MAX_PVALUE.
    """
    if not value or len(value) > MAX_PVALUE or ";" in value or \
            not (value.isascii() and value.isprintable()):      # printable ASCII only
        return ""
    if _BARE_PVALUE.fullmatch(value) or _RFC2045_TOKEN.fullmatch(value):
        return value
    if not last:
        return ""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_WORD = re.compile(r"[A-Za-z0-9-]+")


def _word(value: str) -> str:
    """A result or policy keyword: letters, digits and '-' only."""
    return value if _WORD.fullmatch(value or "") else ""


# reason="..." is a quoted string: spaces are fine; quotes and backslashes are not, and
# ';' and parentheses go too, for the benefit of naive parsers further down the line;
# and anything but printable ASCII.
_UNSAFE_IN_REASON = re.compile(r'[^ -~]|["\\;()]')


def _safe_reason(value: str) -> str:
    """VALUE with every unsafe character a blank, blanks collapsed, at most 160 characters."""
    return " ".join(_UNSAFE_IN_REASON.sub(" ", value).split())[:160]


# Who might read an incoming header as ours. Parsers differ: authres takes a dot-atom;
# OpenDMARC drops quotes and backslashes and joins "mx. example.org" across the blank;
# others unquote a quoted-string (RFC 8601), split naively at the first ';', do not
# nest comments, or compare names after IDNA mapping (U-label and A-label, full-width
# letters, ideographic full stop). A header any of them would read as ours is ours:
# removing a stranger's header costs nothing, keeping a forged one lets a later filter
# trust a forged spf=pass.
_SEPARATOR = r"[\s\x00-\x1f\x7f)]"           # blanks, controls, a stray ')'
_PLAIN_COMMENT = r"\([^()\\]*+\)"    # nothing nested or escaped: read alike every way
_ID_TOKEN = re.compile(rf"(?P<sep>(?:{_SEPARATOR}|{_PLAIN_COMMENT})++)|(?P<end>;)|(?P<open>\()"
                       r"|(?P<word>(?:\\[^;]|\\|[^\s\x00-\x1f\x7f();\\])++)")  # '\;' ends it too
_NESTED_PAREN = re.compile(r"\\[\s\S]|[()]")
_FLAT_COMMENT = re.compile(r"\((?:[^)\\]|\\[\s\S])*+\)")
_LITERAL_COMMENT = re.compile(r"\([^)]*+\)")    # a backslash escapes nothing in it
_ESCAPE = re.compile(r"\\([\s\S]?)")
_QUOTE = re.compile(r'\\?"')        # quotes, escaped ones too
# Enough for any name with ignorable characters sprinkled in; a longer authserv-id
# region is no name anyone would compare with ours.
_MAX_ID_TEXT = 1024
_MAX_ID_WORDS = 64


def claims_authserv_id(value: str, authserv_id: str) -> bool:
    """Whether an incoming Authentication-Results header claims our authserv-id.

    True if authres's parser, or any of the lenient readings of ``_id_words``,
    names an authserv-id that equals ours after unquoting, unescaping, removing
    comments and blanks, case folding, a trailing dot and IDNA mapping
    (``_name_forms``). Linear in the header's length.
    """
    ours = _name_forms(authserv_id)
    try:
        # Only the part before the first ';' names the authserv-id; parsing a whole
        # 100 KB header of results costs authres seconds, on IPv4 mail too.
        text = value[:4096]
        parsed = authres.AuthenticationResultsHeader.parse_value(text.split(";", 1)[0] + "; none")
        if _name_forms(parsed.authserv_id or "") & ours:
            return True
    except Exception:   # authres raises many kinds on garbage: the lenient readings decide
        pass
    unquoted = _QUOTE.sub("", value)
    for comments in ("nested", "flat", "literal"):
        words = _id_words(unquoted, comments)
        candidates = {"".join(words)}
        if words:
            candidates.add(words[0])
            if len(words) > 1 and words[-1].isdigit():          # a version: "id 1"
                candidates.add("".join(words[:-1]))
        if any(_name_forms(candidate) & ours for candidate in candidates):
            return True
    return False


# OpenDKIM's and OpenDMARC's AuthservIDWithJobID: "mx.example.org/QUEUEID".
_JOB_ID = re.compile(r"/[^\s;()\"\\/]*")


def claimed_job_id(value: str, authserv_id: str) -> str | None:
    """The job id of an Authentication-Results that claims ``AUTHSERV_ID/JOBID``, the
    form a milter earlier in the chain writes with AuthservIDWithJobID; None when the
    header does not have that form.

    Such a header is local only if JOBID is this message's queue id: no sender knows
    it before the message is queued, and Postfix shows no milter its own Received
    header, so position cannot tell a local header from a forged one. "" is
    returned for a form no MTA writes (several or empty job ids): never a queue id.
    """
    head = value[:_MAX_ID_TEXT * 4].split(";", 1)[0]
    jobs = [job[1:] for job in _JOB_ID.findall(head)]
    if not jobs or not claims_authserv_id(_JOB_ID.sub("", head) + "; none", authserv_id):
        return None
    return jobs[0] if len(jobs) == 1 else ""


def _id_words(text: str, comments: str) -> list:
    """The words of TEXT (its quotes already dropped, so a quoted id, blanks and
    comments inside the quotes included, reads like a bare one) before the first ';'
    outside comments, backslash escapes undone. COMMENTS says how comments are read:
    "nested" (RFC 5322), "flat" (one ends at the first ')' not escaped) or "literal"
    (at the first ')'). An unterminated comment hides the rest."""
    words, size, pos = [], 0, 0
    while pos < len(text) and len(words) < _MAX_ID_WORDS and size <= _MAX_ID_TEXT:
        token = _ID_TOKEN.match(text, pos)
        kind = token.lastgroup
        if kind == "end":
            break
        if kind == "word":
            # (a word far over the limit cannot be a name: not unescaped in full)
            word = _ESCAPE.sub(r"\1", token.group()[:2 * _MAX_ID_TEXT + 2])
            words.append(word)
            size += len(word)
        elif kind == "open":
            pos = _comment_end(text, pos, comments)
            if pos < 0:
                break
            continue
        pos = token.end()
    return words


def _comment_end(text: str, pos: int, comments: str) -> int:
    """Where the comment opening at POS ends, or -1 if it never does; linear, however
    deep the nesting."""
    if comments != "nested":
        found = (_FLAT_COMMENT if comments == "flat" else _LITERAL_COMMENT).match(text, pos)
        return found.end() if found else -1
    depth = 0
    for found in _NESTED_PAREN.finditer(text, pos):
        char = found.group()
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return found.end()
    return -1


def _name_forms(name: str) -> set:
    """Forms under which a parser may compare NAME: lower case without blanks,
    control or format characters and a trailing dot; and its IDNA (UTS #46) A-label
    form, which maps full-width letters, U+3002 and upper case and drops ignorables."""
    if len(name) > _MAX_ID_TEXT:
        return set()
    name = "".join(ch for ch in name if ch.isprintable() and not ch.isspace())
    forms = {name.lower().rstrip(".")}
    try:
        forms.add(idna.uts46_remap(name, std3_rules=False, transitional=False).lower().rstrip("."))
        forms.add(idna.encode(name.rstrip("."), uts46=True).decode("ascii").rstrip("."))
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    forms.discard("")
    return forms
