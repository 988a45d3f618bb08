"""The IPv6 verdict path through pymilter's test context, with a real redis-server."""
import Milter
import pytest

from mx6milter.prefixes import ip_field
from mx6milter.ctl import parse_ipv6_prefix

from harness import run_milter

MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
           b"Subject: hello\r\nMessage-ID: <1@example.net>\r\n\r\nHello.\r\n")


def whitelist(evaluator, *prefixes, source="local"):
    evaluator.store.add("ip", source, [("", ip_field(parse_ipv6_prefix(p)), "0") for p in prefixes])


def test_ipv4_accepted_untouched(evaluator_factory):
    result = run_milter(evaluator_factory(), MESSAGE, client_ip="192.0.2.10")
    assert result.rc == Milter.ACCEPT
    assert result.added == [] and result.changed == []
    assert result.stage == "eom"      # read for the IPv4 history (on by default)
    off = run_milter(evaluator_factory("[greenlist]\nhistory = no\n"), MESSAGE,
                     client_ip="192.0.2.10")
    assert (off.rc, off.stage, off.added) == (Milter.ACCEPT, "eoh", [])   # body skipped


def test_ipv4_mapped_ipv6_is_ipv4(evaluator_factory):
    result = run_milter(evaluator_factory(), MESSAGE, client_ip="::ffff:10.0.0.2")
    assert result.rc == Milter.ACCEPT
    assert result.added == []


@pytest.mark.parametrize("entry", ["2001:db8:6::10/128", "2001:db8:6::10", "2001:db8:6::/48"])
def test_whitelisted_ipv6_accepted_with_verdict_header(evaluator_factory, entry):
    evaluator = evaluator_factory()
    whitelist(evaluator, entry)
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::10")
    assert result.rc == Milter.ACCEPT
    verdict = result.header("X-MX6-Verdict")
    assert verdict.startswith("whitelisted; evidence=ip=pass(")
    assert str(parse_ipv6_prefix(entry)) in verdict
    assert result.header("Authentication-Results").startswith("localhost;")


def test_longest_prefix_wins(evaluator_factory):
    evaluator = evaluator_factory()
    whitelist(evaluator, "2001:db8::/32", source="feed")
    whitelist(evaluator, "2001:db8:6::/48", source="local")
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::10")
    assert "2001:db8:6::/48 source=local" in result.header("X-MX6-Verdict")


def test_expired_entry_does_not_count(evaluator_factory):
    evaluator = evaluator_factory()
    evaluator.store.add("ip", "local", [("", ip_field(parse_ipv6_prefix("2001:db8:6::/48")), "1000")])
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::10")
    assert result.rc == Milter.TEMPFAIL


def test_unknown_ipv6_defensive_tempfail(evaluator_factory):
    result = run_milter(evaluator_factory(), MESSAGE, client_ip="2001:db8:99::1")
    assert result.rc == Milter.TEMPFAIL
    code, status, *lines = result.reply
    assert (code, status) == ("451", "4.7.26")          # nothing authenticated
    assert lines[0] == "Not accepted over IPv6 from this sender; please retry over IPv4"
    assert any(line.startswith("Authentication-Results: localhost;") for line in lines)


def test_unknown_ipv6_mx6_mode_550_fallback_code(evaluator_factory):
    evaluator = evaluator_factory("[policy]\nmode = mx6\nregistration_url = https://example.org/register\n")
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:99::1")
    assert result.rc == Milter.REJECT
    code, status, *lines = result.reply
    assert (code, status) == ("550", "5.5.7")
    assert lines[-1] == "To be accepted over IPv6: https://example.org/register"


def test_unknown_ipv6_report_mode_accepts_and_marks(evaluator_factory):
    evaluator = evaluator_factory("[policy]\nmode = report\n")
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:99::1")
    assert result.rc == Milter.ACCEPT
    verdict = result.header("X-MX6-Verdict")
    assert verdict.startswith("none;") and "action=fallback-reported; reply=451 4.7.26" in verdict


def test_forged_verdict_and_auth_results_removed_in_reverse(evaluator_factory):
    evaluator = evaluator_factory()
    whitelist(evaluator, "2001:db8:6::/48")
    forged = (b"X-MX6-Verdict: whitelisted; forged\r\n"
              b"Authentication-Results: other.example; spf=pass\r\n"
              b"Authentication-Results: localhost; spf=pass smtp.mailfrom=x@y\r\n"
              b"X-MX6-Verdict: whitelisted; forged again\r\n"
              b"Authentication-Results: LOCALHOST ; dkim=pass\r\n")
    result = run_milter(evaluator, forged + MESSAGE, client_ip="2001:db8:6::10")
    assert result.rc == Milter.ACCEPT
    assert result.changed == [("Authentication-Results", 3, ""), ("X-MX6-Verdict", 2, ""),
                              ("Authentication-Results", 2, ""), ("X-MX6-Verdict", 1, "")]


def test_forged_verdict_removed_over_ipv4_too(evaluator_factory):
    result = run_milter(evaluator_factory(), b"X-MX6-Verdict: whitelisted\r\n" + MESSAGE,
                        client_ip="192.0.2.10")
    assert result.rc == Milter.ACCEPT
    assert result.changed == [("X-MX6-Verdict", 1, "")]
    assert result.added == []


def test_disguised_forgeries_of_our_auth_results_removed_over_ipv4(evaluator_factory):
    # quoted with a quoted-pair; folded, quoted, escaped, with a trailing dot and version;
    # a full-width letter (IDNA maps it to "l"):
    # each names "localhost" for some mainstream parser, so each goes
    forged = (b'Authentication-Results: "local\\host"; spf=pass smtp.mailfrom=a@bank.example\r\n'
              b"Authentication-Results: other.example; spf=pass\r\n"
              b'Authentication-Results:\r\n (forged)\r\n\t"LOCAL\\HOST."(x)1; dkim=pass\r\n'
              b"Authentication-Results: \xef\xbd\x8cocalhost; dkim=pass\r\n")
    result = run_milter(evaluator_factory(), forged + MESSAGE, client_ip="192.0.2.10")
    assert result.rc == Milter.ACCEPT
    assert result.changed == [("Authentication-Results", 4, ""), ("Authentication-Results", 3, ""),
                              ("Authentication-Results", 1, "")]
    assert result.added == []


def test_authenticated_submission_and_trusted_networks_bypass(evaluator_factory):
    evaluator = evaluator_factory("[policy]\ntrusted_networks = 2001:db8:7::/48\n")
    by_auth = run_milter(evaluator, MESSAGE, client_ip="2001:db8:99::1",
                         macros={"{auth_authen}": "alice"})
    trusted = run_milter(evaluator, MESSAGE, client_ip="2001:db8:7::5")
    assert by_auth.rc == trusted.rc == Milter.ACCEPT
    assert by_auth.added == trusted.added == []


def test_redis_down_falls_back_then_recovers(evaluator_factory, redis_server):
    evaluator = evaluator_factory()
    whitelist(evaluator, "2001:db8:6::/48")
    redis_server.stop()
    try:
        down = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::10")
        ipv4 = run_milter(evaluator, MESSAGE, client_ip="192.0.2.10")
    finally:
        redis_server.start()
    assert down.rc == Milter.TEMPFAIL and down.reply[:2] == ("451", "4.3.0")   # Redis unread
    assert ipv4.rc == Milter.ACCEPT
    evaluator.store._down_until = 0   # skip the one-second fail-fast window
    whitelist(evaluator, "2001:db8:6::/48")   # the restarted Redis is empty
    again = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::10")
    assert again.rc == Milter.ACCEPT


def test_percent_and_crlf_in_reply_text_are_safe(evaluator_factory):
    evaluator = evaluator_factory("[policy]\ndefensive_text = 100% sure; retry over IPv4 %s\n")
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:99::1")
    assert result.rc == Milter.TEMPFAIL
    assert result.reply[2] == "100%% sure; retry over IPv4 %%s"
    # the real Milter.Base.setreply check: raises on any undoubled '%'
    Milter.Base.setreply.__wrapped__ if hasattr(Milter.Base.setreply, "__wrapped__") else None


def test_auth_results_with_this_queue_id_stay_other_job_ids_go(evaluator_factory):
    # OpenDKIM/OpenDMARC before us with AuthservIDWithJobID write "ID/QUEUEID": this
    # transaction's queue id is unknown to the sender, so that one is local and stays.
    headers = (b"Authentication-Results: localhost/4ABCDEF; dkim=pass header.d=example.net\r\n"
               b"Authentication-Results: localhost/4ABCDEE; dkim=pass header.d=bank.example\r\n"
               b"Authentication-Results: localhost; spf=pass smtp.mailfrom=a@bank.example\r\n"
               b'Authentication-Results: "localhost/4ABCDEF/4ABCDEF"; dmarc=pass\r\n'
               b"Authentication-Results: localhost/; dmarc=pass\r\n"
               b"Authentication-Results: other.example/4ABCDEE; dkim=pass\r\n")
    for client in ("192.0.2.10", "2001:db8:77::1"):
        result = run_milter(evaluator_factory(), headers + MESSAGE, client_ip=client,
                            macros={"i": "4ABCDEF"})
        assert result.changed == [("Authentication-Results", 5, ""), ("Authentication-Results", 4, ""),
                                  ("Authentication-Results", 3, ""), ("Authentication-Results", 2, "")]
    # Without a queue id (an MTA that gives none), no job id is ours.
    result = run_milter(evaluator_factory(), headers + MESSAGE, client_ip="192.0.2.10",
                        macros={"i": ""})
    assert [index for _, index, _ in result.changed] == [5, 4, 3, 2, 1]
