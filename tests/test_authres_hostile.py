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
