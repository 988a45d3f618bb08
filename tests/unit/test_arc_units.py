"""ARC's parsing and judgement without DNS (evidence/arc.py): the ARC-Authentication-Results
parser, the latest sealer, which recorded passes count, oldest-pass, what we write in
Authentication-Results; hostile input never raises. Chains with real signatures are
in tests/integration/test_arc_chains.py."""
import authres
import authres.arc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mx6milter.config import ConfigError, parse_config
from mx6milter.dns import Resolver
from mx6milter.evidence.arc import (MAX_AAR_LENGTH, MAX_ARC_SETS, ArcResult, Recorded, arc_finding,
                                    arc_fields, check_arc, latest_seal, oldest_pass, parse_aar,
                                    recorded_passes, render_arc_results)
from mx6milter.evidence.auth import Dmarc

from dkimkeys import message

AAR = ("i=1; mx.lists.example.net; dkim=pass header.d=example.com header.s=sel; "
       "spf=pass smtp.mailfrom=bounce@example.com; dmarc=pass (p=reject) header.from=example.com")


@pytest.fixture(scope="module")
def checker():
    return Dmarc()


def budget():
    """A budget on a resolver that is never asked (port 9 discards): these cases end
    before any lookup, and would fail loudly if one were made."""
    return Resolver([("127.0.0.1", 9)], timeout=0.2).budget(0.2)


# --- ARC-Authentication-Results ----------------------------------------------------------


def test_parse_aar_reads_methods_results_and_properties():
    assert parse_aar(AAR) == (
        ("dkim", "pass", {"header.d": "example.com", "header.s": "sel"}),
        ("spf", "pass", {"smtp.mailfrom": "bounce@example.com"}),
        ("dmarc", "pass", {"header.from": "example.com"}),
    )


@pytest.mark.parametrize("value", [
    AAR.split(";", 1)[1],                          # no instance
    "i=x; mx.example.net; dkim=pass",              # not a number
    "i=1; ; ;",
    "i=1; mx.example.net; dkim=pass " + "(" * 50,  # a comment never closed
    AAR + " " * MAX_AAR_LENGTH,                    # longer than we read
])
def test_parse_aar_refuses_what_it_cannot_read(value):
    assert parse_aar(value) == ()


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parse_aar_never_raises_on_any_text(text):
    assert isinstance(parse_aar(text), tuple)


_AAR_PIECES = st.sampled_from(["i=1;", "i=2; ", " mx.example.net;", "dkim=pass", "spf=pass", "dmarc=pass",
                               " header.d=example.com", " header.from=", "smtp.mailfrom=a@b.example",
                               ";", "(", ")", '"', "\\", " ", "=", "@", "\r\n ", "\x00", "é", "x-arc-dkim"])


@settings(max_examples=600, deadline=None)
@given(st.lists(_AAR_PIECES, max_size=40))
def test_parse_aar_never_raises_on_near_misses(pieces):
    parsed = parse_aar("".join(pieces))
    assert all(isinstance(method, str) and isinstance(props, dict) for method, _r, props in parsed)


# --- the latest sealer -----------------------------------------------------------------


SEAL2 = b"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=Lists.Example.NET; s=x;\r\n t=1; b=abc\r\n"
SEAL1 = b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=other.example; s=x; b=abc\r\n"


@pytest.mark.parametrize("block, expected", [
    (SEAL2 + b"ARC-Authentication-Results: i=2; mx.l; arc=pass\r\n" + SEAL1, (2, "lists.example.net")),
    ("ARC-Seal: i=1; d=bücher.example; s=x; b=a\r\n".encode(), (1, "xn--bcher-kva.example")),
    (b"arc-seal  :\r\n\ti=1;\r\n d=folded.example; b=a\r\n", (1, "folded.example")),
    (b"ARC-Seal: i=1; d=a.example; b=x\r\nARC-Seal: i=1; d=b.example; b=y\r\n", (1, "")),   # two seals
    (b"ARC-Seal: i=1; s=x; b=abc\r\n", (1, "")),                                               # no d=
    (b"ARC-Seal: i=1; d=; b=abc\r\n", (1, "")),
    (b"ARC-Seal: i=1; d=bad domain.example; b=abc\r\n", (1, "")),
    (b"ARC-Seal: i=1; d=a.example; d=b.example\r\n", (1, "")),                                 # d= twice
    # a newer set whose seal is missing: the newest instance has no sealer
    (SEAL1 + b"ARC-Message-Signature: i=2; d=a.example\r\n", (2, "")),
    (b"ARC-Message-Signature: i=1; d=a.example\r\n", (0, "")),                                 # no seal
    (b"X-ARC-Seal: i=1; d=a.example\r\n Arc-Seal: i=1; d=b.example\r\n", (0, "")),          # not fields
    (b"ARC-Seal: i=" + b"9" * 5000 + b"; d=a.example\r\n", (10 ** 9, "a.example")),
])
def test_latest_seal(block, expected):
    assert latest_seal(arc_fields(block)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80),
                          st.sampled_from([b"ARC-Seal:", b"arc-seal: i=1; d=x.example", b"\r\n", b"\r\n ",
                                           b"ARC-Message-Signature: i=3", b"i=2;", b"d=", b";", b"="])),
                max_size=12))
def test_latest_seal_never_raises(pieces):
    sets, sealer = latest_seal(arc_fields(b"".join(pieces)))
    assert sets >= 0 and sealer == sealer.lower()


# --- which records count -----------------------------------------------------------------


def test_aligned_passes_of_the_from_domain_count(checker):
    aars = [(2, "relay.example", "i=2; mx.relay.example; dkim=fail header.d=example.com; arc=pass"),
            (1, "lists.example.net", AAR)]
    assert recorded_passes(aars, "example.com", checker) == (
        Recorded("dkim", "example.com", 1, "lists.example.net"),
        Recorded("spf", "example.com", 1, "lists.example.net"),
        Recorded("dmarc", "example.com", 1, "lists.example.net"))


def test_relaxed_alignment_for_dkim_and_spf_but_dmarc_names_the_domain(checker):
    aar = ("i=1; mx.l.example; dkim=pass header.d=mail.example.com; "
           "spf=pass smtp.mailfrom=bounces.example.com; dmarc=pass header.from=example.com")
    assert [r.method for r in recorded_passes([(1, "l.example", aar)], "news.example.com", checker)] == \
        ["dkim", "spf"]


@pytest.mark.parametrize("aar", [
    "i=1; m.l.example; dkim=pass header.d=example.net",               # another domain
    "i=1; m.l.example; dkim=pass header.d=com",                       # a public suffix
    "i=1; m.l.example; spf=pass smtp.mailfrom=a@example.com.evil.example",
    "i=1; m.l.example; dmarc=pass header.from=sub.example.com",       # not the From domain
    "i=1; m.l.example; dkim=fail header.d=example.com",               # not a pass
    "i=1; m.l.example; dkim=pass header.i=@example.com",              # no header.d
    "i=1; m.l.example; x-dkim=pass header.d=example.com",             # not a method we read
    "i=1; m.l.example; dkim=pass header.d=exa_mple.com",              # not a domain
])
def test_records_that_do_not_count(aar, checker):
    assert recorded_passes([(1, "l.example", aar)], "example.com", checker) == ()


def test_a_record_repeated_in_two_sets_counts_once_from_the_newest(checker):
    aars = [(2, "g.example", AAR.replace("i=1", "i=2")), (1, "g.example", AAR)]
    assert [(r.method, r.instance) for r in recorded_passes(aars, "example.com", checker)] == \
        [("dkim", 2), ("spf", 2), ("dmarc", 2)]


@pytest.mark.parametrize("valid, expected", [
    ((True, True, True), 0),        # every AMS validates
    ((True, True, False), 2),       # the oldest (i=1) fails: 2 is the oldest passing
    ((True, False, True), 3),       # only the newest counts from the top down
])
def test_oldest_pass(valid, expected):
    data = [{"instance": 3 - n, "ams-valid": ok} for n, ok in enumerate(valid)]
    assert oldest_pass(data) == expected


# --- what we write -------------------------------------------------------------------------


def parsed(values):
    header = authres.AuthenticationResultsHeader.parse_value("mx.example.org; " + "; ".join(values))
    return [(r.method, r.result, {f"{p.type}.{p.name}": p.value for p in r.properties})
            for r in header.results]


def test_render_pass_labels_inherited_results():
    arc = ArcResult("pass", "relay.example", 2, "example.com",
                    (Recorded("dkim", "mail.example.com", 1, "lists.example.net"),
                     Recorded("spf", "example.com", 1, "lists.example.net")), 0)
    rendered = render_arc_results(arc)
    assert rendered[1] == ("x-arc-dkim=pass (recorded by lists.example.net in ARC set 1) "
                           "header.d=mail.example.com")
    assert parsed(rendered) == [
        ("arc", "pass", {"header.as-d": "relay.example", "header.oldest-pass": "0"}),
        ("x-arc-dkim", "pass", {"header.d": "mail.example.com"}),
        ("x-arc-spf", "pass", {"smtp.mailfrom": "example.com"})]


@pytest.mark.parametrize("result", ["none", "untrusted"])
def test_render_nothing_for_chains_not_verified(result):
    assert render_arc_results(ArcResult(result, "stranger.example")) == ()


def test_render_failure_with_a_hostile_reason_stays_parseable():
    arc = ArcResult("fail", "lists.example.net", 1, reason='x"; dkim=pass (\\ ) ; spf=pass')
    assert parsed(render_arc_results(arc)) == [("arc", "fail", {"header.as-d": "lists.example.net"})]


def test_finding_for_logs_and_explain():
    assert str(arc_finding(ArcResult("pass", "relay.example", 2, "example.com",
                                     (Recorded("dkim", "example.com", 1, "l.example"),)))) == \
        "arc=pass(sealer=relay.example sets=2 from=example.com recorded=dkim)"
    assert str(arc_finding(ArcResult("untrusted", "stranger.example", 1))) == \
        "arc=untrusted(sealer=stranger.example)"
    assert str(arc_finding(ArcResult("none"))) == "arc=none"


# --- cases decided before any lookup ------------------------------------------------------------


def arc_headers(sealers):
    """Unverifiable ARC sets (the signatures are junk) sealed by SEALERS, oldest first."""
    lines = []
    for i, sealer in enumerate(sealers, start=1):
        lines = [f"ARC-Seal: i={i}; cv={'none' if i == 1 else 'pass'}; a=rsa-sha256; d={sealer}; s=s; b=AAAA",
                 f"ARC-Message-Signature: i={i}; a=rsa-sha256; d={sealer}; s=s; h=from; bh=AAAA; b=AAAA",
                 f"ARC-Authentication-Results: i={i}; mx.{sealer}; dkim=pass header.d=example.com"] + lines
    return tuple(lines)


def test_no_arc_headers_is_none(checker):
    assert check_arc(budget(), ("l.example",), message(), "example.com", checker) == ArcResult("none")
    # "ARC-Seal:" in the body is no header
    raw = message(body=b"Hello.\r\nARC-Seal: i=1; d=l.example\r\n")
    assert check_arc(budget(), ("l.example",), raw, "example.com", checker).result == "none"


def test_untrusted_sealer_is_not_verified(checker):
    raw = message(extra=arc_headers(["l.example", "stranger.example"]))
    assert check_arc(budget(), ("l.example",), raw, "example.com", checker) == \
        ArcResult("untrusted", "stranger.example", 2)


def test_too_many_sets_or_a_truncated_message_are_not_verified(checker):
    long_chain = message(extra=arc_headers(["l.example"] * (MAX_ARC_SETS + 1)))
    result = check_arc(budget(), ("l.example",), long_chain, "example.com", checker)
    assert (result.result, result.reason) == ("policy", f"more than {MAX_ARC_SETS} ARC sets, not verified")
    short = message(extra=arc_headers(["l.example"]))
    result = check_arc(budget(), ("l.example",), short, "example.com", checker, truncated=True)
    assert (result.result, result.reason) == ("policy", "message over max_message_size, not verified")
    # few sets, but a pile of ARC fields (each would be hashed into every seal's check)
    padded = message(extra=arc_headers(["l.example"]) + ("ARC-Authentication-Results: i=1; x; none",) * 30)
    assert check_arc(budget(), ("l.example",), padded, "example.com", checker).result == "policy"


def test_spent_budget_is_temperror_before_any_lookup(checker):
    spent = Resolver([("127.0.0.1", 9)], timeout=0.2).budget(0)
    raw = message(extra=arc_headers(["l.example"]))
    result = check_arc(spent, ("l.example",), raw, "example.com", checker)
    assert (result.result, result.reason) == ("temperror", "time budget spent")


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.sampled_from(["ARC-Seal: i=1; d=stranger.example; b=x", "ARC-Seal: i=99999; d=x",
                                       "ARC-Seal:", "arc-seal: i=1; i=2", "ARC-Message-Signature: i=1; d=",
                                       "ARC-Authentication-Results: i=1", "ARC-Seal: i=1; d=st\xe9.example",
                                       "ARC-Seal: i=01; d=stranger.example"]), min_size=1, max_size=8))
def test_hostile_arc_headers_of_untrusted_sealers_never_raise(lines, checker):
    raw = message(extra=tuple(lines))
    result = check_arc(budget(), ("l.example",), raw, "example.com", checker)
    assert result.result in ("none", "untrusted", "fail", "policy")


# --- the configuration --------------------------------------------------------------------------


def test_trusted_sealers_are_a_list_of_a_labels():
    config = parse_config("[arc]\ntrusted_sealers = Google.COM, lists.bücher.example google.com\n")
    assert config.arc.trusted_sealers == ("google.com", "lists.xn--bcher-kva.example")
    assert parse_config("").arc.trusted_sealers == ()


def test_a_bad_sealer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"\[arc\] trusted_sealers"):
        parse_config("[arc]\ntrusted_sealers = google.com bad_domain!\n", "t.conf")
