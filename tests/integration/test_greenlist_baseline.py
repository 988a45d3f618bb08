"""The ``baseline`` greenlist signal (a forward-confirmed PTR and an SPF or DKIM pass) against
the real BIND and Redis. Zones: greenlist.example (SPF for 2001:db8:8::/48, other.greenlist.example
for IPv4 only) and the reverse zone 8.b.d.0.1.0.0.2.ip6.arpa."""
import Milter
import shlex

import pytest

from harness import run_milter

FROM_GREEN = (b"From: Sender <sender@greenlist.example>\r\nTo: user@example.org\r\n"
              b"Subject: hello\r\nMessage-ID: <b1@greenlist.example>\r\n\r\nHello.\r\n")
BASELINE = "[greenlist]\nbaseline = yes\n"
# 2001:db8:8::12 has two PTR names; mx2.greenlist.example resolves back to it
MX2 = "2001:db8:8::12"


def checks_of(caplog, kind):
    line = next(r.getMessage() for r in caplog.records if "checks=" in r.getMessage())
    fields = dict(word.split("=", 1) for word in shlex.split(line))    # values quoted as logfmt
    return [c for c in fields["checks"].split(",") if c.startswith(kind + "=")]


def test_ptr_confirmed_and_spf_pass_greenlist_whatever_the_helo(evaluator_factory):
    result = run_milter(evaluator_factory(BASELINE), FROM_GREEN, client_ip=MX2,
                        helo="other.name.example", mail_from="sender@greenlist.example")
    assert result.rc == Milter.ACCEPT
    assert result.header("X-MX6-Verdict") == (
        "greenlisted; subject-to-content-filtering; "
        "evidence=baseline=pass(ptr=mx2.greenlist.example spf=greenlist.example); "
        "mode=defensive; by=localhost")


def test_off_by_default(evaluator_factory):
    result = run_milter(evaluator_factory(), FROM_GREEN, client_ip=MX2,
                        helo="other.name.example", mail_from="sender@greenlist.example")
    assert result.rc == Milter.TEMPFAIL
    assert result.reply[:2] == ("451", "4.7.1")       # SPF passed: authenticated, nothing known


def test_dkim_pass_stands_in_for_spf(evaluator_factory, dkim_keys):
    raw = dkim_keys.sign(FROM_GREEN, "example.net", "rsa")
    result = run_milter(evaluator_factory(BASELINE), raw, client_ip=MX2,
                        helo="other.name.example", mail_from="sender@other.greenlist.example")
    assert result.rc == Milter.ACCEPT
    assert "evidence=baseline=pass(ptr=mx2.greenlist.example dkim=example.net);" in \
        result.header("X-MX6-Verdict")


@pytest.mark.parametrize("client,mail_from,check,status", [
    # the PTR is confirmed, but other.greenlist.example's SPF covers only IPv4, no signature
    (MX2, "sender@other.greenlist.example",
     "baseline=miss(ptr=mx2.greenlist.example but no SPF or DKIM pass)", "4.7.26"),
    # the PTR name resolves to another address; SPF passes
    ("2001:db8:8::11", "sender@greenlist.example", "baseline=miss(no forward-confirmed PTR)", "4.7.1"),
])
def test_misses(evaluator_factory, caplog, client, mail_from, check, status):
    with caplog.at_level("INFO", logger="mx6milter"):
        result = run_milter(evaluator_factory(BASELINE), FROM_GREEN, client_ip=client,
                            helo="other.name.example", mail_from=mail_from)
    assert result.rc == Milter.TEMPFAIL and result.reply[:2] == ("451", status)
    assert checks_of(caplog, "baseline") == [check]


def test_counts_as_its_own_signal_for_min_signals(evaluator_factory):
    evaluator = evaluator_factory(BASELINE + "min_signals = 2\n")
    both = run_milter(evaluator, FROM_GREEN, client_ip="2001:db8:8::10",
                      helo="mail.greenlist.example", mail_from="sender@greenlist.example")
    assert both.rc == Milter.ACCEPT
    assert ("evidence=fcrdns=pass(mail.greenlist.example),baseline=pass(ptr=mail.greenlist.example "
            "spf=greenlist.example);") in both.header("X-MX6-Verdict")
    one = run_milter(evaluator, FROM_GREEN, client_ip=MX2, helo="other.name.example",
                     mail_from="sender@greenlist.example")
    assert one.rc == Milter.TEMPFAIL
