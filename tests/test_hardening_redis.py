"""Hardening against a real redis-server: bad sources, credentials, TLS, ACL users."""
import subprocess
import sys

import pytest
import redis

from mx6milter.entries import EntryError
from mx6milter.store import Store

from ctl_runner import Ctl


def raw(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


# --- a source named "sources" ---------------------------------------------------------------


def mx6ctl(ctl: Ctl, *argv: str) -> subprocess.CompletedProcess:
    """The real command line (what an operator sees, tracebacks included)."""
    return subprocess.run([sys.executable, "-c", "import sys; from mx6milter.cli import ctl_main; "
                           "sys.exit(ctl_main())", "-c", str(ctl.config), *argv],
                          capture_output=True, text=True, timeout=60)


def test_ctl_refuses_the_source_name_sources(tmp_path, redis_url):
    run = mx6ctl(Ctl(tmp_path, redis_url), "ip", "add", "2001:db8:1::/48", "--source", "sources")
    assert run.returncode == 2 and "reserved" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(EntryError, match="reserved"):     # the store checks too (import, scripts)
        Store(raw(redis_url)).add("ip", "sources", [("", "20010db8/32", "0")])
    assert raw(redis_url).keys("*") == []     # nothing registered, nothing written


# --- a bad source does not break the lookup -------------------------------------------------


def test_lookup_skips_and_reports_a_source_whose_key_is_not_a_hash(redis_url, caplog):
    from mx6milter.entries import parse_ipv6_prefix
    from mx6milter.prefixes import ip_field
    client = raw(redis_url)
    field = ip_field(parse_ipv6_prefix("2001:db8:1::/48"))
    store = Store(client)
    store.add("ip", "local", [("", field, "0")])
    # What an older version let through (--source sources), or a hand-written key:
    client.sadd("mx6:v1:ip:sources", "sources", "by-hand")
    client.set("mx6:v1:ip:by-hand", "oops")
    for _ in range(3):
        hits = store.lookup({"ip": [("", field)], "domain": [("", "example.org")]})
        assert [(h.source, h.field) for h in hits["ip"]] == [("local", field)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings                  # once per bad key, not per lookup
    assert any("mx6:v1:ip:sources" in w for w in warnings)
    assert any("mx6:v1:ip:by-hand" in w for w in warnings)


def test_asn_lookup_skips_bad_sources_and_lists(redis_url, caplog):
    from mx6milter.entries import parse_ipv6_prefix
    from mx6milter.prefixes import ip_field
    client = raw(redis_url)
    field = ip_field(parse_ipv6_prefix("2001:db8::/32"))
    store = Store(client)
    store.add("asn", "table", [("", field, "64500 0")])
    store.add("asnlist", "local", [("", "64500", "0")])
    client.sadd("mx6:v1:asn:sources", "broken")
    client.rpush("mx6:v1:asn:broken", "x")
    client.sadd("mx6:v1:asnlist:sources", "bad-list")
    client.set("mx6:v1:asnlist:bad-list", "x")
    hits = store.lookup({"asn": [("", field)]})["asn"]
    assert sorted((h.source, h.key, h.field) for h in hits) == [
        ("local", "list", "64500"), ("table", "", field)]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "mx6:v1:asn:broken" in warned and "mx6:v1:asnlist:bad-list" in warned


# --- credentials ----------------------------------------------------------------------------


def test_explain_with_redis_down_does_not_show_the_password(tmp_path):
    ctl = Ctl(tmp_path, "redis://mx6milter:s3cr3t-pw@127.0.0.1:1/0")
    message = ctl.file("m.eml", "From: a@example.net\r\nTo: b@example.org\r\n\r\nHi\r\n")
    run = ctl("explain", "--client-ip", "2001:db8::1", "--mail-from", "a@example.net",
              "--rcpt", "b@example.org", message)
    assert run.rc == 1 and "redis://mx6milter:***@127.0.0.1:1/0" in run.err
    assert "s3cr3t" not in run.out + run.err
