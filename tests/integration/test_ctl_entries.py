"""mx6ctl ip|domain|addressbook add|remove|list and stats, against a real redis-server."""
import json

import Milter
import pytest
import redis

from mx6milter.addresses import normalise_address
from mx6milter.config import load_config
from mx6milter.service import build_evaluator
from mx6milter.prefixes import ip_field
from mx6milter.entries import parse_ipv6_prefix

from ctl_runner import Ctl
from harness import run_milter

MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
           b"Subject: hello\r\nMessage-ID: <1@example.net>\r\n\r\nHello.\r\n")
SECRET = b"a-test-secret-of-more-than-16-bytes"


@pytest.fixture
def ctl(tmp_path, redis_url, dns_server):
    return Ctl(tmp_path, redis_url, dns_server.nameservers)


@pytest.fixture
def private_ctl(tmp_path, redis_url, dns_server):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    return Ctl(tmp_path, redis_url, dns_server.nameservers,
               extra=f"[addressbook]\nsecret_file = {secret}\n")


def raw(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


# --- ip -----------------------------------------------------------------------------------


def test_ip_add_list_remove_with_sources_and_expiry(ctl, redis_url):
    assert ctl("ip", "add", "2001:db8:1::/48", "2001:db8::25").rc == 0
    added = ctl("ip", "add", "2001:db8:2::/48", "--source", "partner-feed", "--expires", "2030-01-01")
    assert added.rc == 0 and "added 1 new" in added.out
    again = ctl("ip", "add", "2001:db8:1::/48")
    assert "added 0 new, 1 already present" in again.out
    listed = ctl("ip", "list").out.splitlines()
    assert listed == [
        "2001:db8::25/128\tsource=local\texpires=never",
        "2001:db8:1::/48\tsource=local\texpires=never",
        "2001:db8:2::/48\tsource=partner-feed\texpires=2030-01-01T00:00:00Z",
    ]
    assert ctl("ip", "list", "--source", "partner-feed").out.count("\n") == 1
    assert raw(redis_url).hget("mx6:v1:ip:partner-feed", ip_field(parse_ipv6_prefix("2001:db8:2::/48"))) \
        == "1893456000"
    removed = ctl("ip", "remove", "2001:db8:1::/48", "2001:db8:9::/48")
    assert removed.rc == 0 and removed.out.strip() == "removed 1; 1 not found in any source"
    assert "2001:db8:1::/48" not in ctl("ip", "list").out


@pytest.mark.parametrize("bad, words", [
    ("10.0.0.0/8", "IPv4"),
    ("192.0.2.1", "IPv4"),
    ("2001:db8::1/48", "host bits set"),
    ("::ffff:10.0.0.1", "IPv4-mapped"),
    ("not-an-address", "not an IPv6"),
])
def test_ip_add_refuses_bad_prefixes_and_writes_nothing(ctl, redis_url, bad, words):
    result = ctl("ip", "add", "2001:db8:1::/48", bad)
    assert result.rc == 2
    assert words in result.err and "Traceback" not in result.err
    assert raw(redis_url).keys("mx6:*") == []


def test_expired_entries_are_listed_as_expired(ctl, redis_url):
    raw(redis_url).hset("mx6:v1:ip:old", ip_field(parse_ipv6_prefix("2001:db8:7::/48")), "1000")
    raw(redis_url).sadd("mx6:v1:ip:sources", "old")
    assert ctl("ip", "list").out == "2001:db8:7::/48\tsource=old\texpires=1970-01-01T00:16:40Z\t(expired)\n"


@pytest.mark.parametrize("argv, words", [
    (["ip", "add"], "at least one PREFIX"),
    (["ip", "list", "2001:db8::/32"], "takes no PREFIX"),
    (["ip", "add", "2001:db8::/32", "--expires", "2001-01-01"], "in the past"),
    (["ip", "add", "2001:db8::/32", "--expires", "soon"], "expected never"),
    (["addressbook", "add", "user@example.org"], "at least one SENDER"),
    (["addressbook", "remove", "user@example.org"], "--all"),
    (["addressbook", "add"], "RECIPIENT"),
])
def test_usage_errors_exit_2(ctl, argv, words):
    result = ctl(*argv)
    assert result.rc == 2 and words in result.err


def test_bad_source_name_is_a_usage_error(ctl):
    result = ctl.process("ip", "add", "2001:db8::/32", "--source", "a:b")
    assert result.returncode == 2
    assert b"source name" in result.stderr and b"Traceback" not in result.stderr


# --- domain -------------------------------------------------------------------------------


def test_domain_add_normalises_unicode_and_trailing_dot_with_a_note(ctl, redis_url):
    result = ctl("domain", "add", "Bücher.Example.", "partner.example", "--require", "dkim")
    assert result.rc == 0
    assert "'Bücher.Example.' stored as 'xn--bcher-kva.example'" in result.err
    assert raw(redis_url).hgetall("mx6:v1:domain:local") == {
        "xn--bcher-kva.example": "dkim 0", "partner.example": "dkim 0"}
    assert ctl("domain", "list").out.splitlines() == [
        "partner.example\trequire=dkim\tsource=local\texpires=never",
        "xn--bcher-kva.example\trequire=dkim\tsource=local\texpires=never",
    ]
    assert ctl("domain", "remove", "bücher.example").out.strip() == "removed 1"


@pytest.mark.parametrize("bad, words", [
    ("com", "public suffix"),
    ("co.uk", "public suffix"),
    ("*.partner.example", "no wildcards"),
    ("postmaster@partner.example", "mail address"),
    ("under_score.example", "not a valid domain"),
])
def test_domain_add_refuses_bad_domains(ctl, redis_url, bad, words):
    result = ctl("domain", "add", bad)
    assert result.rc == 2 and words in result.err
    assert raw(redis_url).keys("mx6:*") == []


def test_domain_whitelist_makes_the_milter_accept(ctl, redis_url):
    # example.net publishes SPF for 2001:db8:6::/48 and DMARC: an aligned SPF pass
    assert ctl("domain", "add", "example.net").rc == 0
    evaluator = build_evaluator(load_config(str(ctl.config)))
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::99")
    assert result.rc == Milter.ACCEPT
    assert "domain=pass(example.net via=dmarc source=local)" in result.header("X-MX6-Verdict")


# --- addressbook ----------------------------------------------------------------------------


def test_addressbook_add_list_remove(ctl, redis_url):
    assert ctl("addressbook", "add", "User@Example.org", "Sender@Example.NET",
               "friend@partner.example", "--expires", "2030-01-01").rc == 0
    assert ctl("addressbook", "add", "other@example.org", "x@partner.example",
               "--source", "crm").rc == 0
    assert raw(redis_url).hgetall("mx6:v1:ab:local:user@example.org") == {
        "sender@example.net": "1893456000", "friend@partner.example": "1893456000"}
    assert ctl("addressbook", "list").out.splitlines() == [
        "other@example.org\tx@partner.example\tsource=crm\texpires=never",
        "user@example.org\tfriend@partner.example\tsource=local\texpires=2030-01-01T00:00:00Z",
        "user@example.org\tsender@example.net\tsource=local\texpires=2030-01-01T00:00:00Z",
    ]
    known = ctl("addressbook", "list", "user@example.org", "friend@partner.example", "x@y.example")
    assert known.out.splitlines() == [
        "friend@partner.example\tin addressbook\tsource=local\texpires=2030-01-01T00:00:00Z",
        "x@y.example\tnot in addressbook",
    ]
    assert ctl("addressbook", "remove", "user@example.org", "friend@partner.example").out.strip() \
        == "removed 1"
    whole = ctl("addressbook", "remove", "other@example.org", "--all")
    assert whole.rc == 0 and whole.out.startswith("removed 1 ")
    assert raw(redis_url).exists("mx6:v1:ab:crm:other@example.org") == 0


def test_addressbook_address_without_at_is_refused(ctl, redis_url):
    result = ctl("addressbook", "add", "user@example.org", "friend")
    assert result.rc == 2 and "expected local-part@domain" in result.err
    assert raw(redis_url).keys("mx6:v1:ab:*") == []


def test_addressbook_entry_makes_the_milter_accept(ctl):
    assert ctl("addressbook", "add", "user@example.org", "sender@example.net").rc == 0
    evaluator = build_evaluator(load_config(str(ctl.config)))
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::99")
    assert result.rc == Milter.ACCEPT
    assert "addressbook=pass(1 recipients via=spf)" in result.header("X-MX6-Verdict")


# --- privacy mode ---------------------------------------------------------------------------


def test_privacy_mode_stores_keyed_hashes_and_lookups_still_match(private_ctl, redis_url):
    assert private_ctl("addressbook", "add", "User@Example.org", "sender@example.net").rc == 0
    keys = raw(redis_url).keys("mx6:v1:ab:local:*")
    assert len(keys) == 1 and "@" not in keys[0]
    assert "example" not in json.dumps(raw(redis_url).hgetall(keys[0]))
    # the milter, built from the same configuration, finds the entry
    evaluator = build_evaluator(load_config(str(private_ctl.config)))
    store = evaluator.store
    assert keys[0] == "mx6:v1:ab:local:" + store.addressbook_id(normalise_address("user@example.org"))
    result = run_milter(evaluator, MESSAGE, client_ip="2001:db8:6::99")
    assert result.rc == Milter.ACCEPT
    assert "addressbook=pass" in result.header("X-MX6-Verdict")
    # list can only show hashes, and says so; membership questions still work
    listed = private_ctl("addressbook", "list")
    assert "only hashes" in listed.err
    rcpt_id = store.addressbook_id("user@example.org")
    sender_id = store.addressbook_id("sender@example.net")
    assert listed.out == f"hmac:{rcpt_id}\thmac:{sender_id}\tsource=local\texpires=never\n"
    asked = private_ctl("addressbook", "list", "user@example.org", "sender@example.net", "x@y.example")
    assert asked.out.splitlines()[0].startswith(f"hmac:{sender_id}\tin addressbook")
    assert asked.out.splitlines()[1] == f"hmac:{store.addressbook_id('x@y.example')}\tnot in addressbook"
    # the hashes list shows can be used to remove
    assert private_ctl("addressbook", "remove", f"hmac:{rcpt_id}", f"hmac:{sender_id}").out.strip() \
        == "removed 1"


# --- stats ----------------------------------------------------------------------------------


def test_stats_counts_entries_per_kind_and_source(ctl):
    ctl("ip", "add", "2001:db8:1::/48", "2001:db8:2::/48")
    ctl("ip", "add", "2001:db8:3::/48", "--source", "feed")
    ctl("domain", "add", "partner.example")
    ctl("addressbook", "add", "a@example.org", "x@partner.example", "y@partner.example")
    ctl("addressbook", "add", "b@example.org", "x@partner.example")
    result = ctl("stats", "--json")
    assert result.rc == 0
    summary = json.loads(result.out)
    assert summary["entries"] == [
        {"kind": "ip", "source": "feed", "entries": 1},
        {"kind": "ip", "source": "local", "entries": 2},
        {"kind": "domain", "source": "local", "entries": 1},
        {"kind": "addressbook", "source": "local", "entries": 3, "recipients": 2},
    ]
    assert summary["redis_used_memory"] > 0 and summary["addressbook_hashed"] is False
    text = ctl("stats").out
    assert "addressbook  local                             3          2" in text


# --- Redis down, every verb ----------------------------------------------------------------


DOWN_VERBS = [
    ["ip", "add", "2001:db8::/32"], ["ip", "remove", "2001:db8::/32"], ["ip", "list"],
    ["domain", "add", "partner.example"], ["domain", "remove", "partner.example"], ["domain", "list"],
    ["addressbook", "add", "a@example.org", "b@example.net"],
    ["addressbook", "remove", "a@example.org", "--all"], ["addressbook", "list"],
    ["import", "ip", "FILE"], ["import", "ip", "FILE", "--replace"], ["export", "ip"], ["stats"],
    ["explain", "--client-ip", "2001:db8::1", "--mail-from", "a@example.net", "--rcpt",
     "u@example.org", "MESSAGE"],
]


@pytest.mark.parametrize("argv", DOWN_VERBS, ids=lambda argv: " ".join(argv[:2]))
def test_redis_down_is_exit_1_with_a_clear_message(tmp_path, dns_server, argv):
    ctl = Ctl(tmp_path, "redis://127.0.0.1:1/0", dns_server.nameservers)
    files = {"FILE": ctl.file("list.txt", "2001:db8::/32\n"), "MESSAGE": ctl.file("m.eml", MESSAGE)}
    result = ctl(*[str(files.get(arg, arg)) for arg in argv])
    assert result.rc == 1
    assert "Redis" in result.err and "Traceback" not in result.err


def test_redis_down_real_process_no_traceback(tmp_path):
    ctl = Ctl(tmp_path, "redis://127.0.0.1:1/0")
    result = ctl.process("ip", "list")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("mx6ctl: Redis: ")
    assert b"Traceback" not in result.stderr


def test_an_unreadable_expiry_is_expired_for_mx6ctl_as_for_the_milter(ctl, redis_url):
    """One rule for an expiry: the milter never counts an unreadable one; mx6ctl showed
    it as "never" (a permanent entry) while the milter ignored it."""
    raw(redis_url).hset("mx6:v1:ip:odd", ip_field(parse_ipv6_prefix("2001:db8:7::/48")), "soon")
    raw(redis_url).sadd("mx6:v1:ip:sources", "odd")
    assert ctl("ip", "list").out == "2001:db8:7::/48\tsource=odd\texpires=unreadable\t(expired)\n"
    evaluator = build_evaluator(load_config(str(ctl.config)))
    milter = run_milter(evaluator, MESSAGE, client_ip="2001:db8:7::1")
    assert milter.rc != Milter.ACCEPT
