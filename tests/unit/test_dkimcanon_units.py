"""evidence/dkimcanon.py's message parser, header canonicalisation and b= pattern: byte
for byte dkimpy's, installed only by install(). (The sliced body:
test_memory_budget_units.py.)"""
import dkim
from dkim import canonicalization
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mx6milter.evidence import dkimcanon

# Pieces of the bytes the patterns care about: blanks, line ends and their halves,
# other ASCII white space (bytes.strip removes it, the patterns do not).
FIELD_PIECES = st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b"\r\n ", b"\r\n\t",
                                b"  ", b"\x0b", b"\x0c", b"a", b"B", b";", b"="])
NAMES = st.sampled_from([b"From", b"SUBJECT", b"To \t", b"x-Y", b" Date", b"dkim-signature"])


@settings(max_examples=1500)
@given(st.lists(st.tuples(NAMES, st.lists(FIELD_PIECES, max_size=40).map(b"".join)),
                max_size=6))
@example([(b"Subject", b" a  b\r\n\tc \r\n")])
@example([(b"From", b" Alice <a@example.org>\r\n")])
def test_relaxed_headers_are_dkimpys(headers):
    assert dkimcanon.relaxed_headers(headers) == dkimcanon.DKIMPY_RELAXED_HEADERS(headers)


SIGNATURE = (b" v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\r\n s=sel; h=from :"
             b" to; bh=N9VcrJDHGHVl3PC/wgFgCQaOhfeypoLGzZ4w=;\r\n b=dGhpcyBpcyBub3Qg\r\n"
             b"\t YSByZWFs  IHNpZ25hdHVyZQ==\r\n")
TAG_PIECES = st.sampled_from([b"b", b"=", b"bh", b";", b" ", b"\t", b"\r\n", b"\r", b"\n",
                              b"\x0b", b"a", b"Z", b"0", b"+", b"/", b"-", b":", b"b=", b"; b="])


@settings(max_examples=3000)
@given(st.lists(TAG_PIECES, max_size=60).map(b"".join))
@example(SIGNATURE)
@example(b"; b = ab\r\n cd =\r\n")
@example(b" b=\r\n")
@example(b";b=ab \r\n;b= x")
def test_b_tag_removal_is_dkimpys(value):
    assert dkimcanon.B_TAG.sub(b"\\1", value) == dkimcanon.DKIMPY_B_TAG.sub(b"\\1", value)


def test_b_tag_removal_empties_the_signature():
    assert dkimcanon.B_TAG.sub(b"\\1", SIGNATURE) == SIGNATURE[:SIGNATURE.index(b" b=") + 3]


MESSAGE_PIECES = st.sampled_from([b"From: a", b"X-Y:b", b"\r\n", b"\n", b"\r", b" c", b"\tc",
                                  b"body", b"From x", b"no colon", b":", b"\r\n\r\n",
                                  b"\n\n", b"\x7f", b"\xe9"])


def parsed_or_raised(parse, message):
    try:
        return parse(message)
    except Exception as err:          # dkimpy raises MessageFormatError, or IndexError
        return type(err), str(err)


@settings(max_examples=3000)
@given(st.lists(MESSAGE_PIECES, max_size=40).map(b"".join))
@example(b"")
@example(b"\r\n")
@example(b"A: b\r\n")
@example(b"A: b\r\n c\r\n\r\nline\nbare\r\n\r\n")
@example(b"A: b\n\r\nx\r\n")
@example(b"A: b\r\r\nC: d\r\n\r\nbody\r")
@example(b" leading continuation\r\n\r\n")
def test_rfc822_parse_is_dkimpys(message):
    assert parsed_or_raised(dkimcanon.rfc822_parse, message) == \
        parsed_or_raised(dkimcanon.DKIMPY_RFC822_PARSE, message)


def test_rfc822_parse_keeps_a_crlf_body_as_it_is():
    message = b"From: a@example.org\r\nSubject: x\r\n\r\nline 1\r\n\r\nline 2\r\n"
    headers, body = dkimcanon.rfc822_parse(message)
    assert headers == [[b"From", b" a@example.org\r\n"], [b"Subject", b" x\r\n"]]
    assert body == b"line 1\r\n\r\nline 2\r\n"
    assert dkimcanon.rfc822_parse(b"A: b\n\nline\nend")[1] == b"line\r\nend"


TAG_LIST_PIECES = st.sampled_from([b"a", b"B", b"bh", b"=", b";", b" ", b"\t", b"\r\n", b"1", b"_",
                                   b"-", b"\xc3\xa4", b"v=1", b"; ", b"==", b"\x0b"])


@settings(max_examples=3000)
@given(st.lists(TAG_LIST_PIECES, max_size=30).map(b"".join))
@example(SIGNATURE)
@example(b"v=1; a=rsa-sha256; a=x")
@example(b" ; ")
@example(b"")
@example(b"1=2")
def test_parse_tag_value_is_dkimpys(tag_list):
    def outcome(parse):
        try:
            return parse(tag_list)
        except Exception as err:
            return type(err), err.args
    assert outcome(dkimcanon.parse_tag_value) == outcome(dkimcanon.DKIMPY_PARSE_TAG_VALUE)


def test_install_replaces_dkimpys_functions_and_patterns():
    saved = (canonicalization.Relaxed.canonicalize_body,
             canonicalization.Relaxed.canonicalize_headers, dkim.RE_BTAG, dkim.rfc822_parse,
             dkim.parse_tag_value)
    try:
        canonicalization.Relaxed.canonicalize_headers = staticmethod(dkimcanon.DKIMPY_RELAXED_HEADERS)
        dkim.RE_BTAG = dkimcanon.DKIMPY_B_TAG
        dkim.rfc822_parse = dkimcanon.DKIMPY_RFC822_PARSE
        dkim.parse_tag_value = dkimcanon.DKIMPY_PARSE_TAG_VALUE
        assert not dkimcanon.installed()
        dkimcanon.install()
        dkimcanon.install()                   # idempotent
        assert dkimcanon.installed()
        assert dkim.RE_BTAG is dkimcanon.B_TAG
        assert dkim.DKIM(b"Subject: x\r\n\r\nbody\n").body == b"body\r\n"   # ours, via dkimpy
        policy = canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/simple")
        assert policy.canonicalize_headers([(b"Subject ", b" a \t b\r\n c \r\n")]) == \
            [(b"subject", b"a b c\r\n")]
        simple = canonicalization.CanonicalizationPolicy.from_c_value(b"simple/simple")
        assert simple.canonicalize_headers([(b"Subject ", b" a \t b\r\n")]) == \
            [(b"Subject ", b" a \t b\r\n")]   # simple: untouched
    finally:
        body, headers, dkim.RE_BTAG, dkim.rfc822_parse, dkim.parse_tag_value = saved
        canonicalization.Relaxed.canonicalize_body = staticmethod(body)
        canonicalization.Relaxed.canonicalize_headers = staticmethod(headers)
