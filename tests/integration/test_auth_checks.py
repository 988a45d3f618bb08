"""SPF, DKIM and DMARC (mx6milter.evidence.auth) against a real BIND serving tests/data/zones,
with messages signed in the tests by dkimpy with keys the tests generated."""
import socket

import pytest

from mx6milter.evidence.auth import Dmarc, authenticate, check_dkim, check_spf, render_auth_results
from mx6milter.dns import Resolver

from dkimkeys import message
from servers import free_port


@pytest.fixture
def budget(dns_server):
    return Resolver([("127.0.0.1", dns_server.port)], timeout=1.0).budget(5)


@pytest.fixture
def dead_budget():
    """A resolver whose only server does not answer (nothing listens on the port)."""
    return Resolver([("127.0.0.1", free_port(socket.AF_INET))], timeout=0.3).budget(1)


@pytest.fixture(scope="module")
def dmarc():
    return Dmarc()


# --- SPF ------------------------------------------------------------------------------


@pytest.mark.parametrize("client, mail_from, result", [
    ("2001:db8:10::99", "bounce@example.com", "pass"),
    ("2001:db8:99::1", "bounce@example.com", "fail"),
    ("2001:db8:99::1", "x@softfail.example.com", "softfail"),
    ("2001:db8:99::1", "x@neutral.example.com", "neutral"),
    ("2001:db8:99::1", "x@nospf.example.com", "none"),
    ("2001:db8:99::1", "x@no-such-host.example.com", "none"),
    # eleven includes: over the limit of ten DNS lookups, even for an authorised client
    ("2001:db8:10::99", "x@toomany.example.com", "permerror"),
])
def test_spf_results_are_kept_apart(budget, client, mail_from, result):
    spf = check_spf(budget, client, "mail.example.com", mail_from)
    assert (spf.result, spf.scope, spf.identity) == (result, "mailfrom", mail_from)
    assert spf.domain == mail_from.split("@")[1]


def test_spf_permerror_names_the_lookup_limit(budget):
    spf = check_spf(budget, "2001:db8:10::99", "h", "x@toomany.example.com")
    assert "Too many DNS lookups" in spf.reason


def test_spf_temperror_when_the_dns_server_does_not_answer(dead_budget):
    spf = check_spf(dead_budget, "2001:db8:10::99", "mail.example.com", "bounce@example.com")
    assert spf.result == "temperror"


def test_a_repeat_sender_gets_the_kept_spf_result(budget):
    first = check_spf(budget, "2001:db8:10::99", "mail.example.com", "bounce@example.com")
    assert first.result == "pass"
    assert check_spf(budget, "2001:db8:10::99", "mail.example.com", "bounce@example.com") is first
    other_client = check_spf(budget, "2001:db8:99::1", "mail.example.com", "bounce@example.com")
    assert other_client.result == "fail"
    other_helo = check_spf(budget, "2001:db8:10::99", "other.example.com", "bounce@example.com")
    assert other_helo == first and other_helo is not first
    other_sender = check_spf(budget, "2001:db8:10::99", "mail.example.com", "bounce2@example.com")
    assert other_sender.identity == "bounce2@example.com"


def test_an_spf_result_is_kept_no_longer_than_its_shortest_dns_answer(budget):
    first = check_spf(budget, "2001:db8:10::99", "mail.example.com", "x@shortlived.example.com")
    assert first.result == "pass"            # through the include of a TTL 0 record
    again = check_spf(budget, "2001:db8:10::99", "mail.example.com", "x@shortlived.example.com")
    assert again == first and again is not first


def test_an_spf_temperror_is_never_kept(dead_budget):
    first = check_spf(dead_budget, "2001:db8:10::99", "mail.example.com", "bounce@example.com")
    again = check_spf(dead_budget, "2001:db8:10::99", "mail.example.com", "bounce@example.com")
    assert first.result == again.result == "temperror" and again is not first


def test_null_sender_checks_the_helo_name(budget):
    spf = check_spf(budget, "2001:db8:10::25", "mail.example.com", "")
    assert (spf.result, spf.scope, spf.domain, spf.identity) == \
        ("pass", "helo", "mail.example.com", "mail.example.com")
    assert check_spf(budget, "2001:db8:10::26", "mail.example.com", "").result == "fail"


@pytest.mark.parametrize("helo", ["", "[2001:db8:10::25]", "localhost", "bad..name", "\udcff.x"])
def test_null_sender_with_unusable_helo_is_none(budget, helo):
    spf = check_spf(budget, "2001:db8:10::25", helo, "")
    assert (spf.result, spf.scope) == ("none", "helo")


@pytest.mark.parametrize("mail_from", ["postmaster", "a@", "a@exa mple.com", "a@-x.example",
                                       "x" * 300 + "@example.com"])
def test_unusable_mail_from_is_none_not_a_crash(budget, mail_from):
    assert check_spf(budget, "2001:db8:10::99", "h", mail_from).result == "none"


def test_unicode_mail_from_domain_is_checked_as_a_labels(budget):
    spf = check_spf(budget, "2001:db8:13::1", "h", "jörg@bücher.example")
    assert (spf.result, spf.domain) == ("pass", "xn--bcher-kva.example")


def test_last_resort_record_for_domains_without_spf(budget):
    last_resort = "v=spf1 a//64 -all"    # nospf.example.com has AAAA 2001:db8:10::30
    near = check_spf(budget, "2001:db8:10::31", "h", "x@nospf.example.com", last_resort)
    far = check_spf(budget, "2001:db8:99::1", "h", "x@nospf.example.com", last_resort)
    assert (near.result, near.last_resort) == ("none", "pass")
    assert (far.result, far.last_resort) == ("none", "fail")
    # a domain that publishes SPF is judged by its own record only
    own = check_spf(budget, "2001:db8:99::1", "h", "x@example.com", "v=spf1 +all")
    assert (own.result, own.last_resort) == ("fail", "")


# --- DKIM -----------------------------------------------------------------------------


def test_dkim_rsa_pass(budget, dkim_keys):
    [result] = check_dkim(budget, dkim_keys.sign(message(), "example.com", "rsa"))
    assert (result.result, result.domain, result.selector, result.algorithm) == \
        ("pass", "example.com", "rsa", "rsa-sha256")


def test_dkim_ed25519_pass(budget, dkim_keys):
    [result] = check_dkim(budget, dkim_keys.sign(message(), "example.com", "ed", "ed25519"))
    assert (result.result, result.algorithm) == ("pass", "ed25519-sha256")


def test_dkim_body_altered_fails(budget, dkim_keys):
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    [result] = check_dkim(budget, signed.replace(b"The figures.", b"The new figures."))
    assert (result.result, result.reason) == ("fail", "body hash mismatch")


def test_dkim_signed_header_altered_fails(budget, dkim_keys):
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    [result] = check_dkim(budget, signed.replace(b"Quarterly figures", b"Quarterly figurez"))
    assert result.result == "fail"


def test_every_signature_is_verified_and_every_passing_d_collected(budget, dkim_keys):
    # outermost first: a broken ESP signature on top of a good one, and a third that passes
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    signed = dkim_keys.sign(signed, "esp.example", "rsa", key=dkim_keys.other_rsa_private)
    signed = dkim_keys.sign(signed, "esp.example", "ed", "ed25519")
    results = check_dkim(budget, signed)
    assert [(r.domain, r.result) for r in results] == [
        ("esp.example", "pass"), ("esp.example", "fail"), ("example.com", "pass")]


def test_two_signatures_only_the_second_passes(budget, dkim_keys):
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    signed = dkim_keys.sign(signed, "example.com", "rsa", key=dkim_keys.other_rsa_private)
    results = check_dkim(budget, signed)
    assert [r.result for r in results] == ["fail", "pass"]


def test_dkim_key_missing_or_unusable_is_permerror(budget, dkim_keys):
    [missing] = check_dkim(budget, dkim_keys.sign(message(), "example.com", "nokey"))
    [junk] = check_dkim(budget, dkim_keys.sign(message(), "example.com", "junk"))
    assert (missing.result, missing.reason) == ("permerror", "no key published for the selector")
    assert junk.result == "permerror" and junk.reason.startswith("unusable key")


@pytest.mark.parametrize("selector, words", [
    ("hostile", "key record longer than"),          # n and e of 16,384 bits: 8 s of pow()
    ("bigexp", "exponent of 4096 bits"),
])
def test_hostile_rsa_keys_are_refused_before_any_arithmetic(budget, dkim_keys, selector, words):
    signed = dkim_keys.sign(dkim_keys.sign(message(), "example.com", selector),
                            "example.com", "rsa")
    results = check_dkim(budget, signed)
    assert [r.result for r in results] == ["pass", "permerror"]
    assert words in results[1].reason and results[1].reason.startswith("unusable key")


def test_dkim_temperror_when_the_dns_server_does_not_answer(dead_budget, dkim_keys):
    [result] = check_dkim(dead_budget, dkim_keys.sign(message(), "example.com", "rsa"))
    assert result.result == "temperror"


def test_unsigned_message_has_no_results_and_truncated_is_policy(budget, dkim_keys):
    assert check_dkim(budget, message()) == ()
    [result] = check_dkim(budget, dkim_keys.sign(message(), "example.com", "rsa"), truncated=True)
    assert result.result == "policy"


@pytest.mark.parametrize("signature", [
    b"DKIM-Signature: garbage",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=; s=; b=!!!; bh=!!!; h=from",
    b"DKIM-Signature: v=1; a=rsa-sha999; d=example.com; s=rsa; b=AAAA; bh=AAAA; h=from",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=exa\xffmple.com; s=r\x00sa; b=AAAA; bh=AAAA; h=from",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa; l=99999999999999999999; "
    b"b=AAAA; bh=AAAA; h=from",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa; x=1; t=2; b=AAAA; bh=AAAA; h=from",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=" + b"a." * 200 + b"com; s=rsa; b=AAAA; bh=AAAA; h=from",
    b"DKIM-Signature: " + b"v=1; " * 20000,
])
def test_garbage_signatures_are_results_not_crashes(budget, dkim_keys, signature):
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    results = check_dkim(budget, signature + b"\r\n" + signed)
    assert results[0].result in ("permerror", "fail")
    assert results[1].result == "pass"          # the good signature below still counts


def test_unparseable_message_with_a_signature_is_permerror(budget):
    raw = b"DKIM-Signature: v=1; d=example.com\r\nthis line has no colon\r\n\r\nbody\r\n"
    assert [r.result for r in check_dkim(budget, raw)] == ["permerror"]
    assert check_dkim(budget, b"no colon here\r\n\r\nbody\r\n") == ()
    assert check_dkim(budget, b" continuation first\r\n\r\n") == ()


def test_eight_bit_headers_verify(budget, dkim_keys):
    raw = message(from_="Jörg <joerg@example.com>", subject="Grüße",
                  extra=(b"X-Junk: \xff\xfe not UTF-8",))
    [result] = check_dkim(budget, dkim_keys.sign(raw, "example.com", "rsa",
                                                 include_headers=(b"from", b"subject", b"x-junk")))
    assert result.result == "pass"


# --- DMARC and the whole check ------------------------------------------------------------


def _auth(budget, dmarc, raw, mail_from, client="2001:db8:10::99", helo="mail.example.com",
          from_values=None):
    if from_values is None:
        from_values = [line.split(b":", 1)[1].decode().strip() for line in raw.split(b"\r\n")
                       if line.lower().startswith(b"from:")]
    return authenticate(budget, dmarc, client, helo, mail_from, from_values, raw)


def test_dmarc_relaxed_alignment_by_spf_of_a_subdomain(budget, dmarc):
    outcome = _auth(budget, dmarc, message(), "bounce@bounce.example.com")
    dm = outcome.dmarc
    assert (dm.result, dm.from_domain, dm.policy, dm.spf_aligned, dm.dkim_aligned) == \
        ("pass", "example.com", "reject", True, False)
    assert outcome.aligned_via == "spf"


def test_dmarc_relaxed_alignment_by_dkim(budget, dmarc, dkim_keys):
    raw = dkim_keys.sign(message(), "example.com", "ed", "ed25519")
    outcome = _auth(budget, dmarc, raw, "bounce@esp.example", client="2001:db8:20::1")
    assert outcome.spf.result == "pass"          # the ESP's SPF passes, but for esp.example
    assert (outcome.dmarc.result, outcome.dmarc.spf_aligned, outcome.dmarc.dkim_aligned) == \
        ("pass", False, True)


def test_dmarc_not_aligned_when_only_a_third_party_authenticated(budget, dmarc, dkim_keys):
    raw = dkim_keys.sign(message(), "esp.example", "rsa")
    outcome = _auth(budget, dmarc, raw, "bounce@esp.example", client="2001:db8:20::1")
    assert outcome.spf.result == "pass" and outcome.dkim[0].result == "pass"
    assert (outcome.dmarc.result, outcome.dmarc.policy) == ("fail", "reject")
    assert outcome.aligned_via == ""
    assert outcome.dkim_pass_domains == {"esp.example"}


def test_dmarc_strict_alignment_refuses_subdomains(budget, dmarc, dkim_keys):
    raw = dkim_keys.sign(message(from_="a@example.info"), "mail.example.info", "rsa")
    outcome = _auth(budget, dmarc, raw, "b@bounce.example.info", client="2001:db8:11::1")
    assert outcome.spf.result == "pass" and outcome.dkim[0].result == "pass"
    assert (outcome.dmarc.result, outcome.dmarc.policy) == ("fail", "quarantine")
    # the same From domain signing itself aligns strictly
    raw = dkim_keys.sign(message(from_="a@example.info"), "example.info", "rsa")
    outcome = _auth(budget, dmarc, raw, "b@bounce.example.info", client="2001:db8:11::1")
    assert (outcome.dmarc.result, outcome.dmarc.dkim_aligned, outcome.dmarc.spf_aligned) == \
        ("pass", True, False)


def test_dmarc_subdomain_policy_comes_from_the_organisational_record(budget, dmarc):
    outcome = _auth(budget, dmarc, message(from_="a@sub.example.info"), "b@example.info",
                    client="2001:db8:11::1")
    # no _dmarc.sub.example.info: the org record applies, with its sp=none; strict SPF fails
    assert (outcome.dmarc.result, outcome.dmarc.policy) == ("fail", "none")


def test_no_dmarc_record_is_none_but_alignment_is_still_known(budget, dmarc, dkim_keys):
    raw = dkim_keys.sign(message(from_="a@example.biz"), "example.biz", "rsa")
    outcome = _auth(budget, dmarc, raw, "b@example.biz", client="2001:db8:12::1")
    assert (outcome.dmarc.result, outcome.dmarc.reason) == ("none", "no DMARC record")
    assert outcome.aligned_via == "dkim"


def test_from_with_two_addresses_is_a_dmarc_permerror(budget, dmarc, dkim_keys):
    raw = dkim_keys.sign(message(from_="a@example.com, b@example.com"), "example.com", "rsa")
    outcome = _auth(budget, dmarc, raw, "bounce@example.com")
    assert outcome.dkim[0].result == "pass"
    assert (outcome.dmarc.result, outcome.dmarc.reason) == ("permerror", "2 addresses in From")
    assert outcome.from_address == "" and outcome.aligned_via == ""


@pytest.mark.parametrize("from_values", [[], ["a@example.com", "b@example.com"], ["alice"],
                                         ["(" * 20000], ["<>"], ["x" * 100000 + "@example.com"]])
def test_missing_or_unusable_from_is_a_defined_result(budget, dmarc, from_values):
    outcome = _auth(budget, dmarc, message(), "bounce@example.com", from_values=from_values)
    assert outcome.dmarc.result == "permerror" and outcome.dmarc.reason
    assert "dmarc=permerror" in render_auth_results("mx.example.org", outcome)


def test_unicode_from_domain(budget, dmarc, dkim_keys):
    raw = message(from_="Jörg <jörg@bücher.example>")
    raw = dkim_keys.sign(raw, "xn--bcher-kva.example", "rsa")
    outcome = _auth(budget, dmarc, raw, "jörg@bücher.example", client="2001:db8:13::1")
    assert outcome.dkim[0].result == "pass" and outcome.spf.result == "pass"
    assert (outcome.dmarc.result, outcome.dmarc.from_domain) == ("pass", "xn--bcher-kva.example")
    assert outcome.from_address == "jörg@bücher.example"
    value = render_auth_results("mx.example.org", outcome)
    assert "header.from=xn--bcher-kva.example" in value and value.isascii()


def test_dns_failure_makes_every_check_temperror(dead_budget, dmarc, dkim_keys):
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    outcome = _auth(dead_budget, dmarc, raw, "bounce@example.com")
    assert outcome.spf.result == "temperror"
    assert outcome.dkim[0].result == "temperror"
    assert outcome.dmarc.result == "temperror"
    assert [t.split(":")[0] for t in outcome.temp_errors] == ["spf", "dkim", "dmarc"]


def test_signatures_beyond_the_cap_are_reported_not_verified(budget, dkim_keys, dns_server):
    from mx6milter.evidence.auth import MAX_DKIM_SIGNATURES
    signed = dkim_keys.sign(message(), "example.com", "rsa")          # the lowest: never reached
    for i in range(MAX_DKIM_SIGNATURES + 4):
        signed = dkim_keys.sign(signed, "esp.example", f"s{i}")        # no such selectors
    before = dns_server.query_count()
    results = check_dkim(budget, signed)
    assert len(results) == MAX_DKIM_SIGNATURES + 5
    assert [r.result for r in results[:MAX_DKIM_SIGNATURES]] == ["permerror"] * MAX_DKIM_SIGNATURES
    assert {r.result for r in results[MAX_DKIM_SIGNATURES:]} == {"policy"}
    assert dns_server.query_count() - before == MAX_DKIM_SIGNATURES


def test_a_message_with_1100_signatures_gets_a_bounded_header(budget, dkim_keys):
    # 1,100 DKIM-Signature fields made a 66 KB Authentication-Results, over libmilter's
    # 65,535-byte limit for a header: BUG and 451 4.3.0 for a whitelisted message
    import authres
    from mx6milter.evidence.auth import MAX_AUTH_RESULTS_LENGTH, AuthOutcome, SpfResult
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    assert signed.startswith(b"DKIM-Signature:")
    signature = signed[:signed.index(b"\r\nFrom:") + 2]          # the field, folded lines and all
    results = check_dkim(budget, signature * 1099 + signed)
    assert len(results) == 1100
    value = render_auth_results("mx.example.org", AuthOutcome(SpfResult("none"), results))
    assert len(value) <= MAX_AUTH_RESULTS_LENGTH
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    dkim = [r for r in parsed.results if r.method == "dkim"]
    assert [r.result for r in dkim] == ["pass"] * 10 + ["policy"]
    assert dkim[-1].reason == "1090 more signatures, not verified"
