"""The domain whitelist and the addressbook, through the milter (tests/support/harness.py run_milter,
exact CRLF bytes), with real DKIM signatures, a real BIND and a real redis-server."""
import logging

import Milter
import pytest
import redis

from mx6milter.addresses import normalise_address
from mx6milter.store import Store

from dkimkeys import message
from harness import run_milter

POLICY = "[policy]\nauthserv_id = mx.example.org\n"
PARTNER_IP = "2001:db8:10::99"        # inside example.com's SPF
STRANGER_IP = "2001:db8:99::1"        # authorised by nobody


@pytest.fixture
def evaluator(evaluator_factory):
    return evaluator_factory(POLICY)


def whitelist_domain(evaluator, domain, requirement="dmarc", expires=0, source="local"):
    evaluator.store.add("domain", source, [("", domain, f"{requirement} {expires}")])


def addressbook(evaluator, recipient, *senders, source="local"):
    ids = evaluator.store.addressbook_id
    evaluator.store.add("ab", source, [(ids(normalise_address(recipient)),
                                        ids(normalise_address(s)), "0") for s in senders])


def verdict(result):
    return result.header("X-MX6-Verdict") or ""


NOT_AUTHENTICATED, NOT_KNOWN, DNS_FAILED = "4.7.26", "4.7.1", "4.4.3"


def assert_fallback(result, why):
    """The defensive fallback, its status code saying WHY (policy.FALLBACK_STATUS_KEYS)."""
    assert result.rc == Milter.TEMPFAIL, result
    code, status, *lines = result.reply
    assert (code, status) == ("451", why)
    return lines


# --- the domain whitelist -----------------------------------------------------------


def test_whitelisted_domain_authenticated_is_accepted(evaluator, dkim_keys):
    whitelist_domain(evaluator, "example.com")
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="bounce@esp.example")
    assert result.rc == Milter.ACCEPT
    assert verdict(result).startswith(
        "whitelisted; evidence=domain=pass(example.com via=dmarc source=local)")
    auth_results = result.header("Authentication-Results")
    assert auth_results.startswith("mx.example.org; spf=fail smtp.mailfrom=bounce@esp.example;")
    assert "dkim=pass header.d=example.com" in auth_results
    assert "dmarc=pass header.from=example.com" in auth_results


def test_same_domain_unauthenticated_falls_back(evaluator, dkim_keys):
    whitelist_domain(evaluator, "example.com")
    # From example.com, but nothing authenticates it: no signature, SPF fails
    result = run_milter(evaluator, message(), client_ip=STRANGER_IP,
                        mail_from="bounce@example.com")
    lines = assert_fallback(result, NOT_AUTHENTICATED)
    assert lines[1].startswith("Authentication-Results: mx.example.org; spf=fail "
                               "smtp.mailfrom=bounce@example.com; dkim=none; dmarc=fail")


def test_forged_signature_of_a_whitelisted_domain_falls_back(evaluator, dkim_keys):
    whitelist_domain(evaluator, "example.com", "any")
    raw = dkim_keys.sign(message(), "example.com", "rsa", key=dkim_keys.other_rsa_private)
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example")
    assert "dkim=fail" in " ".join(assert_fallback(result, NOT_AUTHENTICATED))


def test_dkim_requirement_counts_an_unaligned_signature(evaluator, dkim_keys):
    # the ESP signs mail From its customer: DMARC fails, but a "dkim" entry for the ESP counts
    whitelist_domain(evaluator, "esp.example", "dkim")
    raw = dkim_keys.sign(message(from_="news@customer.example"), "esp.example", "ed", "ed25519")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="b@esp.example")
    assert result.rc == Milter.ACCEPT
    assert "domain=pass(esp.example via=dkim source=local)" in verdict(result)


def test_dmarc_requirement_refuses_the_unaligned_signature(evaluator, dkim_keys):
    whitelist_domain(evaluator, "esp.example")           # default: dmarc (aligned)
    raw = dkim_keys.sign(message(from_="news@customer.example"), "esp.example", "rsa")
    # customer.example is served by no test zone: its DMARC lookup is REFUSED (dns-unavailable)
    assert_fallback(run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="b@esp.example"),
                    DNS_FAILED)


def test_spf_requirement_and_its_subdomains(evaluator):
    whitelist_domain(evaluator, "example.com", "spf")
    # unsigned, From some other domain: only the SPF pass of bounce.example.com counts
    result = run_milter(evaluator, message(from_="x@elsewhere.example"), client_ip=PARTNER_IP,
                        mail_from="b@bounce.example.com")
    assert result.rc == Milter.ACCEPT
    assert "domain=pass(example.com via=spf source=local)" in verdict(result)
    # the same message from outside SPF falls back
    assert_fallback(run_milter(evaluator, message(from_="x@elsewhere.example"),
                               client_ip=STRANGER_IP, mail_from="b@bounce.example.com"),
                    DNS_FAILED)      # elsewhere.example: no zone, its DMARC lookup is REFUSED


def test_entry_for_a_subdomain_does_not_cover_its_parent(evaluator, dkim_keys):
    whitelist_domain(evaluator, "mail.example.com", "any")
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    assert_fallback(run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example"), NOT_KNOWN)


def test_expired_domain_entry_does_not_count(evaluator, dkim_keys):
    whitelist_domain(evaluator, "example.com", "any", expires=1000)
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    assert_fallback(run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example"), NOT_KNOWN)


def test_strict_dmarc_domain_whitelisted_needs_strict_alignment(evaluator, dkim_keys):
    whitelist_domain(evaluator, "example.info")
    raw = dkim_keys.sign(message(from_="a@example.info"), "mail.example.info", "rsa")
    assert_fallback(run_milter(evaluator, raw, client_ip="2001:db8:11::1",
                               mail_from="b@bounce.example.info"), NOT_KNOWN)
    raw = dkim_keys.sign(message(from_="a@example.info"), "example.info", "rsa")
    result = run_milter(evaluator, raw, client_ip="2001:db8:11::1",
                        mail_from="b@bounce.example.info")
    assert result.rc == Milter.ACCEPT


def test_null_sender_authenticated_by_helo_spf(evaluator):
    whitelist_domain(evaluator, "example.com", "spf")
    raw = message(from_="MAILER-DAEMON@mail.example.com", subject="Undelivered Mail")
    result = run_milter(evaluator, raw, client_ip="2001:db8:10::25", helo="mail.example.com",
                        mail_from="")
    assert result.rc == Milter.ACCEPT
    assert "domain=pass(example.com via=spf" in verdict(result)
    assert "spf=pass smtp.helo=mail.example.com" in result.header("Authentication-Results")
    # the HELO's SPF does not hold for another client address
    assert_fallback(run_milter(evaluator, raw, client_ip="2001:db8:10::26",
                               helo="mail.example.com", mail_from=""), NOT_AUTHENTICATED)


def test_last_resort_spf_counts_for_spf_entries(evaluator_factory):
    evaluator = evaluator_factory(POLICY + "spf_last_resort = v=spf1 a//64 -all\n")
    whitelist_domain(evaluator, "nospf.example.com", "spf")
    result = run_milter(evaluator, message(from_="a@nospf.example.com"),
                        client_ip="2001:db8:10::31", mail_from="a@nospf.example.com")
    assert result.rc == Milter.ACCEPT
    assert "spf=none (last-resort pass)" in result.header("Authentication-Results")


def test_unicode_from_domain_whitelisted(evaluator, dkim_keys):
    whitelist_domain(evaluator, "xn--bcher-kva.example")
    raw = dkim_keys.sign(message(from_="Jörg <jörg@bücher.example>"), "xn--bcher-kva.example")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="jörg@bücher.example")
    assert result.rc == Milter.ACCEPT
    assert "domain=pass(xn--bcher-kva.example via=dmarc" in verdict(result)


def test_from_with_two_addresses_is_not_aligned(evaluator, dkim_keys):
    whitelist_domain(evaluator, "example.com")
    raw = dkim_keys.sign(message(from_="a@example.com, b@example.com"), "example.com", "rsa")
    lines = assert_fallback(run_milter(evaluator, raw, client_ip=STRANGER_IP,
                                       mail_from="x@esp.example"), NOT_KNOWN)
    assert 'dmarc=permerror reason="2 addresses in From"' in " ".join(lines)


# --- the addressbook ------------------------------------------------------------------


def test_addressbook_hit_with_authentication_is_accepted(evaluator, dkim_keys):
    addressbook(evaluator, "user@example.org", "Alice@Example.COM")
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example",
                        rcpts=("User@Example.org",))
    assert result.rc == Milter.ACCEPT
    assert verdict(result).startswith("whitelisted; evidence=addressbook=pass(1 recipients via=dkim)")


def test_addressbook_hit_by_aligned_spf_is_accepted(evaluator):
    addressbook(evaluator, "user@example.org", "alice@example.com")
    result = run_milter(evaluator, message(), client_ip=PARTNER_IP,
                        mail_from="b@bounce.example.com")
    assert result.rc == Milter.ACCEPT
    assert "addressbook=pass(1 recipients via=spf)" in verdict(result)


def test_addressbook_hit_without_authentication_falls_back(evaluator, caplog):
    addressbook(evaluator, "user@example.org", "alice@example.com")
    with caplog.at_level(logging.INFO, logger="mx6milter"):
        result = run_milter(evaluator, message(), client_ip=STRANGER_IP,
                            mail_from="alice@example.com")
    assert_fallback(result, NOT_AUTHENTICATED)
    assert "addressbook=unauthenticated(all 1 recipients know the sender" in caplog.text


def test_addressbook_hit_by_unaligned_third_party_falls_back(evaluator, dkim_keys):
    addressbook(evaluator, "user@example.org", "alice@example.com")
    raw = dkim_keys.sign(message(), "esp.example", "rsa")
    assert_fallback(run_milter(evaluator, raw, client_ip="2001:db8:20::1",
                               mail_from="b@esp.example"), NOT_KNOWN)


def test_one_recipient_lacking_the_sender_falls_back_for_the_whole_message(evaluator, dkim_keys,
                                                                           caplog):
    addressbook(evaluator, "user@example.org", "alice@example.com")
    addressbook(evaluator, "other@example.org", "bob@example.com")
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    with caplog.at_level(logging.INFO, logger="mx6milter"):
        result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example",
                            rcpts=("user@example.org", "other@example.org"))
    assert_fallback(result, NOT_KNOWN)
    assert "addressbook=miss(1/2 recipients know the sender)" in caplog.text
    # once both know the sender, the same transaction is accepted for both
    addressbook(evaluator, "other@example.org", "alice@example.com")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example",
                        rcpts=("user@example.org", "other@example.org"))
    assert result.rc == Milter.ACCEPT
    assert "addressbook=pass(2 recipients via=dkim)" in verdict(result)


def test_addressbook_entries_in_different_sources_combine(evaluator, dkim_keys):
    addressbook(evaluator, "user@example.org", "alice@example.com", source="local")
    addressbook(evaluator, "other@example.org", "alice@example.com", source="webmail")
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example",
                        rcpts=("user@example.org", "other@example.org"))
    assert result.rc == Milter.ACCEPT


def test_addressbook_local_part_folding_is_configurable(evaluator_factory, dkim_keys):
    evaluator = evaluator_factory(POLICY + "[addressbook]\nfold_local_part = no\n")
    addressbook_ids = evaluator.store.addressbook_id
    evaluator.store.add("ab", "local", [
        (addressbook_ids(normalise_address("user@example.org", False)),
         addressbook_ids(normalise_address("alice@example.com", False)), "0")])
    raw = dkim_keys.sign(message(from_="Alice@example.com"), "example.com", "rsa")
    assert_fallback(run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example"), NOT_KNOWN)
    raw = dkim_keys.sign(message(from_="alice@EXAMPLE.com"), "example.com", "rsa")
    assert run_milter(evaluator, raw, client_ip=STRANGER_IP,
                      mail_from="x@esp.example").rc == Milter.ACCEPT


def test_addressbook_with_unicode_addresses(evaluator, dkim_keys):
    addressbook(evaluator, "ünïcode@example.org", "jörg@bücher.example")
    raw = dkim_keys.sign(message(from_="Jörg <JÖRG@BÜCHER.example>"), "xn--bcher-kva.example")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example",
                        rcpts=("ünïcode@example.org",))
    assert result.rc == Milter.ACCEPT
    assert "addressbook=pass" in verdict(result)


def test_addressbook_in_privacy_mode_stores_hashes(redis_url, dns_server, dkim_keys):
    from conftest import make_config
    from mx6milter.dns import Resolver
    from mx6milter.evaluate import Evaluator
    config = make_config(POLICY, redis_url, dns_server.nameservers)
    store = Store.from_config(config.redis, addressbook_secret=b"s" * 32)
    evaluator = Evaluator(config, store, Resolver.from_config(config.dns))
    addressbook(evaluator, "user@example.org", "alice@example.com")
    keys = redis.Redis.from_url(redis_url, decode_responses=True).keys("*")
    assert not any("example" in key for key in keys)
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    assert run_milter(evaluator, raw, client_ip=STRANGER_IP,
                      mail_from="x@esp.example").rc == Milter.ACCEPT


# --- DNS failure ----------------------------------------------------------------------


def test_dns_failure_falls_back_with_the_would_be_authentication_results(evaluator_factory,
                                                                         dkim_keys, caplog):
    from servers import free_port
    evaluator = evaluator_factory(POLICY + "[dns]\ntimeout = 0.3\nbudget = 1\n",
                                  nameservers=f"127.0.0.1:{free_port()}")
    whitelist_domain(evaluator, "example.com")
    addressbook(evaluator, "user@example.org", "alice@example.com")
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    with caplog.at_level(logging.INFO, logger="mx6milter"):
        result = run_milter(evaluator, raw, client_ip=PARTNER_IP, mail_from="b@example.com")
    text = " ".join(assert_fallback(result, DNS_FAILED))      # long A-R values wrap over reply lines
    assert "Authentication-Results: mx.example.org; spf=temperror" in text
    assert "dkim=temperror" in text and "dmarc=temperror" in text
    assert "reasons=dns-unavailable" in caplog.text


def test_dns_failure_does_not_hide_an_ip_whitelist_entry(evaluator_factory, dkim_keys):
    from mx6milter.ctl import parse_ipv6_prefix
    from mx6milter.prefixes import ip_field
    from servers import free_port
    evaluator = evaluator_factory(POLICY + "[dns]\ntimeout = 0.3\nbudget = 1\n",
                                  nameservers=f"127.0.0.1:{free_port()}")
    evaluator.store.add("ip", "local", [("", ip_field(parse_ipv6_prefix("2001:db8:10::/48")), "0")])
    result = run_milter(evaluator, message(), client_ip=PARTNER_IP, mail_from="b@example.com")
    assert result.rc == Milter.ACCEPT
    assert "failures=dns-unavailable" in verdict(result)


# --- entries written by mx6ctl are read as meant ------------------------------------------


def test_entries_added_with_mx6ctl_count(evaluator, redis_url, tmp_path, dkim_keys, capsys):
    from mx6milter.ctl import main as mx6ctl
    config = tmp_path / "mx6milter.conf"
    config.write_text(f"[redis]\nurl = {redis_url}\n")
    assert mx6ctl(["-c", str(config), "domain", "add", "ESP.example.", "--require", "dkim"]) == 0
    assert mx6ctl(["-c", str(config), "addressbook", "add", "ünïcode@example.org",
                   "Jörg@Bücher.example"]) == 0
    capsys.readouterr()
    raw = dkim_keys.sign(message(from_="news@customer.example"), "esp.example", "rsa")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="b@esp.example")
    assert "domain=pass(esp.example via=dkim source=local)" in verdict(result)
    raw = dkim_keys.sign(message(from_="jörg@bücher.example"), "xn--bcher-kva.example")
    result = run_milter(evaluator, raw, client_ip=STRANGER_IP, mail_from="x@esp.example",
                        rcpts=("Ünïcode@Example.org",))
    assert "addressbook=pass(1 recipients via=dkim)" in verdict(result)
