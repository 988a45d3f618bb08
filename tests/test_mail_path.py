"""The mail path under hostile or broken input: no lost mail, no harm to IPv4.

Real daemon (tests/milterd.py) driven by miltertest, real Redis, or the
in-process pymilter harness for several messages on one connection.
"""
from __future__ import annotations

import pytest

from milterd import MilterDaemon
from test_miltertest import miltertest


@pytest.fixture
def daemon(tmp_path, redis_url):
    with MilterDaemon(tmp_path, f"unix:{tmp_path}/m.sock", redis_url) as milter:
        yield milter


@pytest.mark.parametrize("client, expect", [("192.0.2.10", "a"), ("2001:db8:99::1", "y")])
def test_helo_that_is_not_utf8_is_no_filter_failure(daemon, client, expect):
    """pymilter fails to decode it before our code runs; libmilter's default then
    answered 451 4.3.0 "Filter failure" to the HELO of IPv4 mail."""
    miltertest("eightbit_helo.lua", daemon.socket, CLIENT=client, EXPECT=expect)
    assert "UnicodeDecodeError" in daemon.log()
