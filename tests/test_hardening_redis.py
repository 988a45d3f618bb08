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
