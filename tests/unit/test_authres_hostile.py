"""Hostile Authentication-Results: forged claims of our authserv-id, and the header we write.

Pure: no DNS, no Redis.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mx6milter.evidence.auth import claims_authserv_id

OURS = "mx.example.org"
OURS_U = "mx.exämple.org"                 # the same name as U-label ...
OURS_A = "mx.xn--exmple-cua.org"          # ... and as A-label


# --- forged headers that some mainstream parser reads as ours ---------------------------------
# Each of these was kept before: a later filter trusting "our" header would have trusted
# a forged spf=pass. Every one names our authserv-id for at least one of authres,
# OpenDMARC (quotes and backslashes dropped, "a. b" joined), a naive split at ';', a
# parser without nested comments, or an IDNA-aware comparison.

FORGED = [
    # a quoted-string authserv-id with a quoted-pair (RFC 8601: compared unquoted)
    (' "mx\\.example.org"; spf=pass smtp.mailfrom=a@bank.example', OURS),
    # the same backslash, unquoted (OpenDMARC takes the escaped character literally)
    (" mx\\.example.org; spf=pass", OURS),
    # whitespace inside the name: OpenDMARC joins tokens around the dots
    (" mx. example.org; spf=pass", OURS),
    (" mx .example. org; spf=pass", OURS),
    # a comment inside the name
    (" mx.(x)example.org; spf=pass", OURS),
    # a version number after a name read with the above
    (" mx. example.org 1; spf=pass", OURS),
    (' "mx\\.example.org" 1 (v); spf=pass', OURS),
    # a trailing dot and upper case, on a quoted and escaped id
    (' "MX\\.EXAMPLE.ORG."; spf=pass', OURS),
    # a comment glued to an id written with a blank
    (" mx. example.org(comment); spf=pass", OURS),
    # CFWS with folded lines before the id, and a fold inside it
    ("\r\n (c)\r\n\tmx.\r\n example.org; spf=pass", OURS),
    # a quoted id with inner spaces, or a comment inside the quotes
    (' " mx.example.org "; spf=pass', OURS),
    (' "(forged) mx.example.org"; spf=pass', OURS),
    # quotes around each label, escaped quotes
    (' "mx"."example"."org"; spf=pass', OURS),
    (' \\"mx.example.org\\"; spf=pass', OURS),
    # the U-label of our A-label name, and the A-label of our U-label name, any case
    (" MX.EXÄMPLE.ORG; spf=pass", OURS_A),
    (" mx.xn--exmple-cua.org; spf=pass", OURS_U),
    # IDNA mapping: ideographic full stop, full-width letters, an ignorable soft hyphen
    (" mx\u3002example\u3002org; spf=pass", OURS),
    (" \uff4d\uff58.example.org; spf=pass", OURS),
    (" mx.exa\u00admple.org; spf=pass", OURS),
    # terminated by the end of the header, without ';'
    (' "mx\\.example.org"', OURS),
    (" mx. example.org", OURS),
    # a NUL ends the name for a C parser
    (" mx.example.org\x00x; spf=pass", OURS),
    # a naive split at the first ';' (inside quotes or after a backslash)
    (' " mx.example.org;x"; spf=pass', OURS),
    (" mx.example.org\\; spf=pass", OURS),
    # a parser without nested comments, or without quoted-pairs in comments
    (" (a (b) mx.example.org; spf=pass", OURS),
    (" (c\\) mx.example.org; spf=pass", OURS),
]


@pytest.mark.parametrize("value, ours", FORGED)
def test_forged_shapes_claim_our_authserv_id(value, ours):
    assert claims_authserv_id(value, ours) is True


@pytest.mark.parametrize("value", [
    " other.example; spf=pass smtp.mailfrom=a@example.com",
    " mx.example.org.evil.example; spf=pass",
    " evil-mx.example.org; spf=pass",
    " mx.example.org1; spf=pass",
    " other.example (mx.example.org); spf=pass",
    " other.example mx.example.org; spf=pass",
    ' "other.example"; spf=pass header.d=mx.example.org',
    " mx.example.com; spf=pass",
    " (" * 5000 + "mx.example.org",
])
def test_other_authserv_ids_are_kept(value):
    assert claims_authserv_id(value, OURS) is False


# --- any CFWS, quoting, case and trailing dot around our id -------------------------------------

_ctext = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                               blacklist_characters="()\\;\""), max_size=8)
_fws = st.sampled_from([" ", "\t", "\r\n ", "\r\n\t", "  "])


@st.composite
def _comment(draw, depth=0):
    inner = draw(_ctext)
    if depth < 2 and draw(st.booleans()):
        inner += draw(_comment(depth + 1)) + draw(_ctext)
    return "(" + inner + ")"


_cfws = st.lists(st.one_of(_fws, _comment()), max_size=4).map("".join)


@st.composite
def _our_id(draw):
    name = "".join(ch.upper() if draw(st.booleans()) else ch for ch in OURS)
    if draw(st.booleans()):
        name += "."
    if draw(st.booleans()):                  # a quoted-string, maybe with quoted-pairs
        if draw(st.booleans()):
            name = name.replace(".", "\\.")
        blank = draw(st.sampled_from(["", " "]))
        name = '"' + blank + name + blank + '"'
    return name


@settings(max_examples=400, deadline=None)
@given(before=_cfws, name=_our_id(), after=_cfws, version=st.sampled_from(["", " 1", "1"]),
       rest=st.sampled_from(["", "; none", "; spf=pass smtp.mailfrom=a@bank.example",
                             ";dkim=pass header.d=bank.example"]))
def test_our_id_in_any_cfws_or_quoting_is_claimed(before, name, after, version, rest):
    version = (" " + version.strip()) if version.strip() and not after else version
    value = before + name + after + version + rest
    assert claims_authserv_id(value, OURS) is True


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_claims_never_raises(value):
    assert claims_authserv_id(value, OURS) in (True, False)


# --- the header we write: values quoted as RFC 8601 allows, parseable, one line -----------------

import re  # noqa: E402

import authres  # noqa: E402

from mx6milter.evidence.auth import (MAX_PVALUE, AuthOutcome, DkimResult,  # noqa: E402
                                     DmarcResult, SpfResult, render_auth_results)


def _outcome(spf=None, dkim=None, dmarc=None):
    return AuthOutcome(spf=spf or SpfResult("pass", "example.com", "mailfrom", "a@example.com"),
                       dkim=dkim if dkim is not None else (DkimResult("pass", "example.com", "s1",
                                                                      "rsa-sha256"),),
                       dmarc=dmarc or DmarcResult("pass", "example.com", "reject", True, True))


def _parse(value):
    """authres's reading, with and without the field name; they must agree."""
    assert "\r" not in value and "\n" not in value and value.isascii()
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    named = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
    assert [str(r) for r in named.results] == [str(r) for r in parsed.results]
    return parsed


def _property(parsed, method, ptype, name):
    """The one value of ptype.name in the one result of METHOD, as authres returns it."""
    results = [r for r in parsed.results if r.method == method]
    assert len(results) == 1
    values = [p.value for p in results[0].properties if (p.type, p.name) == (ptype, name)]
    assert len(values) <= 1
    return values[0] if values else None


def _readings(raw):
    """authres returns a quoted-string's content with its quoted-pairs as written; RFC 8601
    compares it unescaped. A local-part quoted-string comes back whole, quotes included."""
    return {raw, re.sub(r"\\(.)", r"\1", raw)} if raw is not None else set()


@pytest.mark.parametrize("identity", [
    "a,b@example.com",
    '"john smith"@example.com',
    '"a(b"@example.com',
    '"a\\"b"@example.com',
    'x"y@example.com',
    "a b@example.com",
    "a..b@example.com",
    "(comment)a@example.com",
    "a@b@example.com",
    "\\@example.com",
])
def test_mail_from_needing_quotes_is_quoted_and_read_back_exactly(identity):
    value = render_auth_results(OURS, _outcome(spf=SpfResult("pass", "example.com", "mailfrom",
                                                             identity)))
    parsed = _parse(value)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")]
    raw = _property(parsed, "spf", "smtp", "mailfrom")
    assert identity in _readings(raw), (identity, value)
    assert value.count(";") == 3


def test_identity_with_a_semicolon_keeps_only_its_domain():
    # a ';' is never written inside a value (a naive split would find a result there):
    # RFC 8601 lets the local part go
    value = render_auth_results(OURS, _outcome(spf=SpfResult(
        "pass", "example.com", "mailfrom", '"a;dkim=pass header.d=bank.example"@example.com')))
    assert "smtp.mailfrom=@example.com;" in value and value.count(";") == 3
    assert _property(_parse(value), "spf", "smtp", "mailfrom") == "@example.com"


def test_non_ascii_identities_are_written_with_a_label_domains():
    value = render_auth_results(OURS, _outcome(spf=SpfResult(
        "pass", "xn--bcher-kva.example", "mailfrom", "jörg@bücher.example")))
    assert "smtp.mailfrom=@xn--bcher-kva.example;" in value
    value = render_auth_results(OURS, _outcome(spf=SpfResult(
        "pass", "xn--bcher-kva.example", "mailfrom", "joerg@bücher.example")))
    assert "smtp.mailfrom=joerg@xn--bcher-kva.example;" in value
    value = render_auth_results(OURS, _outcome(spf=SpfResult(
        "pass", "xn--bcher-kva.example", "helo", "bücher.example")))
    assert "smtp.helo=xn--bcher-kva.example;" in value


_any_text = st.text(max_size=80)
_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
_mixed = st.one_of(_any_text, _ascii)
_result = st.sampled_from(["pass", "fail", "none", "neutral", "softfail", "temperror",
                           "permerror", "policy"])


def _faithful(text):
    return bool(text) and text.isascii() and text.isprintable() and ";" not in text \
        and len(text) <= MAX_PVALUE


@settings(max_examples=400, deadline=None)
@given(mail_from=_mixed, helo=_mixed, null_sender=st.booleans(), spf_result=_result,
       spf_reason=_mixed, d=_mixed, s=_mixed, a=_mixed, dkim_result=_result, dkim_reason=_mixed,
       from_domain=_mixed, dmarc_reason=_mixed)
def test_rendered_header_always_parses_and_keeps_printable_identities(
        mail_from, helo, null_sender, spf_result, spf_reason, d, s, a, dkim_result,
        dkim_reason, from_domain, dmarc_reason):
    scope, identity = ("helo", helo) if null_sender else ("mailfrom", mail_from)
    value = render_auth_results(OURS, AuthOutcome(
        spf=SpfResult(spf_result, "", scope, identity, spf_reason),
        dkim=(DkimResult(dkim_result, d, s, a, dkim_reason),),
        dmarc=DmarcResult("fail", from_domain, "none", reason=dmarc_reason)))
    parsed = _parse(value)
    assert parsed.authserv_id == OURS
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", spf_result), ("dkim", dkim_result), ("dmarc", "fail")]
    assert value.count(";") == 3                       # no ';' inside any value
    raw = _property(parsed, "spf", "smtp", "helo" if null_sender else "mailfrom")
    if _faithful(identity):
        assert identity in _readings(raw), (identity, value)
    raw_s = _property(parsed, "dkim", "header", "s")
    if _faithful(s):
        assert s in _readings(raw_s), (s, value)
    raw_d = _property(parsed, "dkim", "header", "d")
    if re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", d):   # a domain, as check_dkim gives it
        assert raw_d == d


@settings(max_examples=200, deadline=None)
@given(reason=_mixed)
def test_any_reason_is_one_parseable_line(reason):
    value = render_auth_results(OURS, _outcome(
        dkim=(DkimResult("permerror", "example.com", "s", "rsa-sha256", reason),),
        dmarc=DmarcResult("permerror", reason=reason)))
    parsed = _parse(value)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"), ("dkim", "permerror"), ("dmarc", "permerror")]
    assert value.count(";") == 3


# --- a message with very many DKIM signatures -------------------------------------------------

from mx6milter.evidence.auth import (MAX_AUTH_RESULTS_DKIM,  # noqa: E402
                                     MAX_AUTH_RESULTS_LENGTH, MAX_DKIM_SIGNATURES)

# libmilter refuses a header whose "name\0value\0" exceeds MILTER_MAX_DATA_SIZE
LIBMILTER_MAX_DATA_SIZE = 65535


def _many_signatures(count, verified=MAX_DKIM_SIGNATURES):
    checked = [DkimResult("pass" if i % 2 else "fail", f"d{i}.example.com", f"s{i}",
                          "rsa-sha256", "" if i % 2 else "body hash mismatch")
               for i in range(verified)]
    skipped = [DkimResult("policy", reason=f"more than {MAX_DKIM_SIGNATURES} signatures, "
                                           "not verified") for _ in range(count - verified)]
    return tuple(checked + skipped)


def test_1100_signatures_make_a_bounded_header_that_parses():
    value = render_auth_results(OURS, _outcome(dkim=_many_signatures(1100)))
    assert len(value) <= MAX_AUTH_RESULTS_LENGTH < LIBMILTER_MAX_DATA_SIZE // 4
    assert len(b"Authentication-Results\0 " + value.encode() + b"\0") < LIBMILTER_MAX_DATA_SIZE
    parsed = _parse(value)
    dkim = [r for r in parsed.results if r.method == "dkim"]
    assert len(dkim) == MAX_AUTH_RESULTS_DKIM + 1
    # every verified signature is listed, in order, then one result counting the rest
    assert [r.header_d for r in dkim[:-1]] == [f"d{i}.example.com" for i in range(10)]
    assert (dkim[-1].result, dkim[-1].reason) == ("policy", "1090 more signatures, not verified")
    assert [r.method for r in parsed.results] == ["spf"] + ["dkim"] * 11 + ["dmarc"]


def test_verified_signatures_come_first_when_unverified_ones_precede_them():
    skipped = DkimResult("policy", reason="message over max_message_size, not verified")
    signatures = (skipped,) * 20 + (DkimResult("pass", "example.com", "s", "rsa-sha256"),)
    parsed = _parse(render_auth_results(OURS, _outcome(dkim=signatures)))
    dkim = [r for r in parsed.results if r.method == "dkim"]
    assert (dkim[0].result, dkim[0].header_d) == ("pass", "example.com")
    assert len(dkim) == MAX_AUTH_RESULTS_DKIM + 1
    assert dkim[-1].reason == "11 more signatures, not verified"


def test_up_to_the_cap_every_signature_is_listed_without_a_summary():
    value = render_auth_results(OURS, _outcome(dkim=_many_signatures(MAX_AUTH_RESULTS_DKIM)))
    assert value.count("dkim=") == MAX_AUTH_RESULTS_DKIM and "more signatures" not in value


def test_long_hostile_values_list_fewer_results_and_count_them_all():
    long = "x" * 300
    signatures = tuple(DkimResult("permerror", long + ".example", long, long, long)
                       for _ in range(MAX_DKIM_SIGNATURES))
    identity = '"' + "y" * 250 + '"@' + "z" * 60 + ".example"
    value = render_auth_results(OURS, _outcome(
        spf=SpfResult("permerror", "example.com", "mailfrom", identity, long),
        dkim=signatures * 30, dmarc=DmarcResult("permerror", long, reason=long)))
    assert len(value) <= MAX_AUTH_RESULTS_LENGTH
    parsed = _parse(value)
    dkim = [r for r in parsed.results if r.method == "dkim"]
    listed = len(dkim) - 1
    assert 1 <= listed <= MAX_AUTH_RESULTS_DKIM
    assert dkim[-1].reason == f"{300 - listed} more signatures, not listed"


@settings(max_examples=50, deadline=None)
@given(count=st.integers(0, 1500), text=_mixed)
def test_any_number_of_signatures_stays_bounded(count, text):
    signatures = tuple(DkimResult("policy" if i >= MAX_DKIM_SIGNATURES else "permerror",
                                  text, text, text, text) for i in range(count))
    value = render_auth_results(OURS, _outcome(dkim=signatures))
    assert len(value) <= MAX_AUTH_RESULTS_LENGTH
    parsed = _parse(value)
    assert len([r for r in parsed.results if r.method == "dkim"]) == \
        (1 if count == 0 else min(count, MAX_AUTH_RESULTS_DKIM + (count > MAX_AUTH_RESULTS_DKIM)))


# --- the string work's shortcuts give what the plain definitions give ------------------

from mx6milter.evidence import auth as auth_module  # noqa: E402

reason_text = st.lists(st.one_of(st.sampled_from(['"', "\\", ";", "(", ")", " ", "  ", "\t", "\r\n",
                                                  "\x00", "\x7f", "~", "\u00e9", "\udc80", "a b"]),
                                 st.text(max_size=20)), max_size=40).map("".join)


@settings(max_examples=1000)
@given(reason_text)
def test_safe_reason_is_the_plain_definition(value):
    plain = "".join(ch if " " <= ch <= "~" and ch not in '"\\;()' else " " for ch in value)
    assert auth_module._safe_reason(value) == " ".join(plain.split())[:160]


@settings(max_examples=1000)
@given(reason_text)
def test_pvalue_writes_only_printable_ascii_as_before(value):
    written = auth_module._pvalue(value)
    if not all(" " <= ch <= "~" for ch in value):
        assert written == ""
    elif value and ";" not in value and len(value) <= MAX_PVALUE:
        assert written in (value, '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
