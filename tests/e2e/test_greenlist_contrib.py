"""The content-filter hand-off: contrib/rspamd run in a real rspamd (the SpamAssassin
rules, read only: unit/test_greenlist_contrib_units.py).

rspamd is started on loopback with Debian's stock configuration plus the
contrib files as its local.d, and two stand-in rules: TEST_BULK in a bulk
spam group and TEST_MALWARE in the "antivirus" group (what ClamAV would add).
"""
import pytest

from rspamd import Rspamd
from verdicts import verdict


def message(verdict_value: str | None) -> bytes:
    head = f"X-MX6-Verdict: {verdict_value}\r\n" if verdict_value else ""
    return (head + "From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
            "Subject: offer\r\nMessage-ID: <1@example.net>\r\n"
            "Date: Sun, 22 Nov 2026 18:00:00 +0000\r\n\r\n"
            "cheap-test-pills and test-malware-marker\r\n").encode()


@pytest.fixture(scope="module")
def rspamd():
    server = Rspamd()
    try:
        yield server.start()
    finally:
        server.close()


def test_rspamd_whitelisted_skips_bulk_rules_keeps_malware(rspamd):
    found = rspamd.symbols(message(verdict("whitelisted")))
    assert {"MX6_WHITELISTED", "TEST_MALWARE"} <= found
    assert "TEST_BULK" not in found
    assert "MX6_GREENLISTED" not in found


def test_rspamd_greenlisted_scored_as_usual(rspamd):
    found = rspamd.symbols(message(verdict("greenlisted")))
    assert {"MX6_GREENLISTED", "TEST_BULK", "TEST_MALWARE"} <= found
    assert "MX6_WHITELISTED" not in found


def test_rspamd_without_verdict_scored_as_usual(rspamd):
    found = rspamd.symbols(message(None))
    assert {"TEST_BULK", "TEST_MALWARE"} <= found
    assert not found & {"MX6_WHITELISTED", "MX6_GREENLISTED"}


def test_rspamd_report_mode_fallback_is_not_whitelisted(rspamd):
    value = verdict("none", mode="report")
    assert value.startswith("none;")
    found = rspamd.symbols(message(value))
    assert "TEST_BULK" in found
    assert not found & {"MX6_WHITELISTED", "MX6_GREENLISTED"}
