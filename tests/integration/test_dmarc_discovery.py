"""DMARC discovery and alignment in Dmarc.check against the tests' BIND
(the record parser's own tests are in tests/unit/test_dmarc_record.py)."""
import pytest

from mx6milter.dns import Resolver
from mx6milter.evidence.auth import DkimResult, Dmarc, SpfResult, authenticate

from dkimkeys import message


# --- discovery and alignment (BIND serving tests/data/zones) ----------------------------


@pytest.fixture
def budget(dns_server):
    return Resolver([("127.0.0.1", dns_server.port)], timeout=1.0).budget(5)


SPF_PASS_NET = SpfResult("pass", "example.net", "mailfrom", "b@example.net")


def test_lower_case_version_is_no_record_so_the_organisational_one_applies(budget):
    result = Dmarc().check(budget, "lower.example.net", SPF_PASS_NET, ())
    # _dmarc.lower.example.net has "v=dmarc1; p=none": discarded; example.net's p=reject holds
    assert (result.result, result.policy, result.spf_aligned) == ("pass", "reject", True)


def test_sloppy_record_keeps_its_good_tags(budget):
    result = Dmarc().check(budget, "sloppy.example.net", SPF_PASS_NET,
                           (DkimResult("pass", "example.net"),))
    # aspf=s: example.net is not sloppy.example.net; adkim=x is ignored (relaxed): DKIM aligns
    assert (result.result, result.policy, result.spf_aligned, result.dkim_aligned) == \
        ("pass", "quarantine", False, True)


def test_a_txt_record_that_is_not_dmarc_does_not_count(budget):
    result = Dmarc().check(budget, "mixed.example.net", SPF_PASS_NET, ())
    assert (result.result, result.policy) == ("pass", "quarantine")


def test_two_records_mean_no_dmarc_and_no_fallback_to_the_organisational_domain(budget):
    result = Dmarc().check(budget, "twice.example.net", SPF_PASS_NET, ())
    assert (result.result, result.policy, result.reason) == ("none", "", "several DMARC records")
    assert result.spf_aligned       # relaxed alignment is still reported


def test_an_unusable_record_means_no_dmarc(budget):
    result = Dmarc().check(budget, "unusable.example.net", SPF_PASS_NET, ())
    assert (result.result, result.policy) == ("none", "")
    assert result.reason.startswith("unusable DMARC record: ")


def test_null_sender_aligns_through_the_helo_spf_pass(budget):
    """RFC 7208 2.4: for MAIL FROM:<> SPF checks the HELO name, and that is the SPF
    identity DMARC aligns with."""
    raw = message(from_="MAILER-DAEMON@mail.example.com", subject="Undelivered Mail")
    outcome = authenticate(budget, Dmarc(), "2001:db8:10::25", "mail.example.com", "",
                           ["MAILER-DAEMON@mail.example.com"], raw)
    assert (outcome.spf.result, outcome.spf.scope) == ("pass", "helo")
    dm = outcome.dmarc
    assert (dm.result, dm.policy, dm.spf_aligned, dm.dkim_aligned) == ("pass", "reject", True, False)
    assert outcome.aligned_via == "spf"
    # a HELO of another organisation does not align
    outcome = authenticate(budget, Dmarc(), "2001:db8:10::25", "mail.example.com", "",
                           ["MAILER-DAEMON@example.net"], raw)
    assert (outcome.dmarc.result, outcome.dmarc.spf_aligned) == ("fail", False)
