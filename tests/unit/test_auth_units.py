"""Pure parts of the authentication code: addresses, From parsing, A-R headers, alignment.

No DNS, no Redis: these run in milliseconds.
"""
import time

import authres
import pytest

from mx6milter.addresses import (AddressError, domain_of, domain_to_ascii, from_addresses,
                                 normalise_address)
from mx6milter.evidence import auth
from mx6milter.evidence.auth import (AuthOutcome, DkimResult, Dmarc, DmarcResult, SpfResult,
                            claims_authserv_id, render_auth_results, single_from_address)
from mx6milter.addresses import domain_suffixes
from mx6milter.entries import value_requirement
from mx6milter.evidence.whitelist import covers


# --- addresses ------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("BÜCHER.Example", "xn--bcher-kva.example"),
    ("straße.example", "xn--strae-oqa.example"),      # IDNA 2008, not 2003's "strasse"
    ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
])
def test_domains_become_lower_case_a_labels(given, expected):
    assert domain_to_ascii(given) == expected


@pytest.mark.parametrize("bad", ["", ".", "a..b", "-a.example", "a-.example", "a_b.example",
                                 "ex ample.com", "x" * 64 + ".com", "a." * 130 + "com",
                                 "\udcff.example", "exa\x00mple.com", "é" * 300])
def test_impossible_domains_raise_address_error_only(bad):
    with pytest.raises(AddressError):
        domain_to_ascii(bad)


def test_normalise_address_folds_domain_always_and_local_part_if_asked():
    assert normalise_address("Alice@Bücher.Example") == "alice@xn--bcher-kva.example"
    assert normalise_address("Alice@Bücher.Example", fold_local_part=False) == \
        "Alice@xn--bcher-kva.example"
    assert normalise_address("<Jörg@Example.com>") == "jörg@example.com"


@pytest.mark.parametrize("bad", ["alice", "@example.com", "alice@", "a b@example.com",
                                 "x" * 65 + "@example.com", "al\udcffce@example.com",
                                 "alice@exa mple.com"])
def test_bad_addresses(bad):
    with pytest.raises(AddressError):
        normalise_address(bad)
    assert domain_of(bad) is None or "@" in bad


# --- the RFC5322.From address ------------------------------------------------------------


@pytest.mark.parametrize("values, address, problem", [
    (["Alice <alice@example.com>"], "alice@example.com", ""),
    (["alice@example.com (Alice)"], "alice@example.com", ""),
    (["Jörg <jörg@bücher.example>"], "jörg@bücher.example", ""),
    ([], "", "no From header"),
    (["a@example.com", "b@example.com"], "", "several From headers"),
    (["a@example.com, b@example.com"], "", "2 addresses in From"),
    (["undisclosed-recipients:;"], "", "0 addresses in From"),
    (["<>"], "", "0 addresses in From"),
    (["alice"], "", "unparseable From address"),
    (["a@b@c"], "", "unparseable From address"),
])
def test_single_from_address(values, address, problem):
    assert single_from_address(values) == (address, problem)


def test_hostile_from_headers_never_raise_and_stay_fast():
    started = time.monotonic()
    for value in ["(" * 50000 + "a@example.com",       # the stdlib parser recurses on comments
                  '"' * 50000 + "a@example.com",
                  "A" * 100000 + " <a@example.com>",
                  ", ".join(f"x{i}@example.com" for i in range(5000)),
                  "\x00\r\n\t<a@example.com>"]:
        address, problem = single_from_address([value])
        assert address == "" or address == "a@example.com"
        if not address:
            assert problem
    assert from_addresses(["(" * 5000 + "a@example.com"]) is None
    assert time.monotonic() - started < 2


# --- Authentication-Results ----------------------------------------------------------------


def _outcome(**kw):
    base = dict(spf=SpfResult("pass", "example.com", "mailfrom", "alice@example.com"),
                dkim=(DkimResult("pass", "example.com", "rsa", "rsa-sha256"),
                      DkimResult("fail", "example.com", "ed", "ed25519-sha256", "body hash mismatch")),
                dmarc=DmarcResult("pass", "example.com", "reject", True, True))
    base.update(kw)
    return AuthOutcome(**base)


def test_rendered_header_parses_back_with_every_result():
    value = render_auth_results("mx.example.org", _outcome())
    assert value == ("mx.example.org; spf=pass smtp.mailfrom=alice@example.com; "
                     "dkim=pass header.d=example.com header.a=rsa-sha256 header.s=rsa; "
                     'dkim=fail reason="body hash mismatch" header.d=example.com '
                     "header.a=ed25519-sha256 header.s=ed; "
                     "dmarc=pass header.from=example.com policy.dmarc=reject")
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    assert parsed.authserv_id == "mx.example.org"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dkim", "fail"), ("dmarc", "pass")]


def test_null_sender_is_reported_as_helo_and_no_signature_as_dkim_none():
    value = render_auth_results("mx.example.org", _outcome(
        spf=SpfResult("pass", "mail.example.com", "helo", "mail.example.com"), dkim=()))
    assert "spf=pass smtp.helo=mail.example.com;" in value
    assert "dkim=none;" in value


def test_last_resort_result_is_a_comment_next_to_spf_none():
    value = render_auth_results("mx.example.org", _outcome(
        spf=SpfResult("none", "nospf.example.com", "mailfrom", "a@nospf.example.com",
                      last_resort="pass")))
    assert "spf=none (last-resort pass) smtp.mailfrom=a@nospf.example.com" in value


def test_hostile_values_cannot_break_out_of_the_header():
    evil = 'x"; dkim=pass header.d=bank.example (\r\n\\'
    value = render_auth_results("mx.example.org", _outcome(
        spf=SpfResult("permerror", "example.com", "mailfrom", "a;b c(d)@example.com", evil),
        dkim=(DkimResult("permerror", evil, evil, evil, evil + "é" * 500),),
        dmarc=DmarcResult("permerror", reason=evil)))
    assert "\r" not in value and "\n" not in value and value.isascii()
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "permerror"), ("dkim", "permerror"), ("dmarc", "permerror")]
    # no ';' survives inside values: even a naive split finds exactly the three results
    assert value.count(";") == 3


# --- claims of our authserv-id ----------------------------------------------------------------


@pytest.mark.parametrize("value, ours", [
    (" mx.example.org; spf=pass smtp.mailfrom=a@example.com", True),
    (" MX.Example.Org; dkim=pass", True),
    (" mx.example.org.; dkim=pass", True),
    (" mx.example.org 1; none", True),
    (" mx.example.org;\r\n\tspf=pass smtp.mailfrom=x@example.com", True),
    (" (forged) mx.example.org; spf=pass", True),         # authres cannot parse it
    (" (a (nested) comment) mx.example.org; x", True),
    (' "mx.example.org"; dkim=pass', True),
    (" mx.example.org; garbage !!!", True),
    (" mx.example.org", True),
    (" other.example; spf=pass smtp.mailfrom=a@example.com", False),
    (" mx.example.org.evil.example; spf=pass", False),
    (" evil-mx.example.org; spf=pass", False),
    ("", False),
    (" ;;;", False),
    (" (" * 5000 + "mx.example.org", False),
])
def test_claims_authserv_id(value, ours):
    assert claims_authserv_id(value, "mx.example.org") is ours


# --- alignment and the domain whitelist's matching -----------------------------------------------


@pytest.fixture(scope="module")
def dmarc():
    return Dmarc()


def test_organisational_domains_come_from_the_public_suffix_list(dmarc):
    assert dmarc.org_domain("a.b.example.com") == "example.com"
    assert dmarc.org_domain("mail.example.co.uk") == "example.co.uk"
    assert dmarc.org_domain("co.uk") == "co.uk"
    assert dmarc.aligned("example.co.uk", "bounce.example.co.uk", "r")
    assert not dmarc.aligned("example.co.uk", "other.co.uk", "r")       # not "co.uk" for both
    assert not dmarc.aligned("example.com", "bounce.example.com", "s")
    assert dmarc.aligned("example.com", "example.com", "s")
    assert not dmarc.aligned("example.com", "", "r")


def test_organisational_domains_are_kept_per_list_and_bounded():
    from publicsuffixlist import PublicSuffixList
    # a list where "example.com" is itself a public suffix: another answer, own cache
    private = Dmarc(PublicSuffixList([b"com", b"example.com"]))
    for _ in range(2):
        assert private.org_domain("a.b.example.com") == "b.example.com"
        assert Dmarc().org_domain("a.b.example.com") == "example.com"
    info = private._org_domains.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 1, auth.ORG_DOMAINS_KEPT)


def test_aligned_via_counts_dmarc_pass_or_aligned_auth_without_a_record():
    assert _outcome().aligned_via == "dkim"
    no_record = DmarcResult("none", "example.biz", spf_aligned=True, reason="no DMARC record")
    assert _outcome(dmarc=no_record).aligned_via == "spf"
    assert _outcome(dmarc=DmarcResult("fail", "example.com", "reject")).aligned_via == ""
    assert _outcome(dmarc=DmarcResult("temperror", "example.com")).aligned_via == ""
    assert _outcome(dmarc=DmarcResult("permerror", reason="2 addresses in From")).aligned_via == ""


def test_domain_entries_cover_their_subdomains_only():
    assert covers("example.com", "example.com")
    assert covers("example.com", "a.b.example.com")
    assert not covers("example.com", "badexample.com")
    assert not covers("example.com", "example.com.evil.example")
    assert not covers("", "example.com") and not covers("example.com", "")
    assert domain_suffixes("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    assert domain_suffixes("com") == []


@pytest.mark.parametrize("value, requirement", [
    ("dkim 0", "dkim"), ("spf 1700000000", "spf"), ("any 0", "any"), ("dmarc 0", "dmarc"),
    ("0", "dmarc"), ("", "dmarc"), ("everything 0", "dmarc"), ("DKIM 0", "dmarc"),
])
def test_domain_entry_requirement_defaults_to_aligned(value, requirement):
    assert value_requirement(value) == requirement


def test_huge_authentication_results_headers_cost_bounded_work(monkeypatch):
    # Checked on every message, IPv4 included: a 100 KB header must not cost seconds.
    # The work is bounded, not timed: authres (slow on long values) sees at most the
    # first 4 KB, and the lenient readings stop after a bounded number of tokens.
    from mx6milter.evidence import auth as auth_module
    parsed_lengths, tokens = [], []
    real_parse = authres.AuthenticationResultsHeader.parse_value
    real_token = auth_module._ID_TOKEN

    class CountingToken:
        def match(self, text, pos):
            tokens.append(pos)
            return real_token.match(text, pos)

    def recording_parse(value):
        parsed_lengths.append(len(value))
        return real_parse(value)

    monkeypatch.setattr(authres.AuthenticationResultsHeader, "parse_value", recording_parse)
    monkeypatch.setattr(auth_module, "_ID_TOKEN", CountingToken())
    values = [" mx.example.org; " + "spf=pass smtp.mailfrom=a@example.com; " * 2700,
              " other.example; " + "dkim=pass header.d=example.com; " * 3000,
              " (" * 50000 + "mx.example.org; x"]
    results = [claims_authserv_id(value, "mx.example.org") for value in values]
    assert results == [True, False, False]
    assert parsed_lengths and max(parsed_lengths) <= 4096 + len("; none")
    # three comment readings per header, each stopping within its word and text limits
    assert len(tokens) <= 3 * len(values) * (auth_module._MAX_ID_TEXT + auth_module._MAX_ID_WORDS)
