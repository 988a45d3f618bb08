"""The journal's pure parts: fingerprints, the /48, what a message lacked, the
report's percentiles and suggestions, and reading back hostile stream entries."""
import json
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.config import DEFAULT_CONFIG, ConfigError, parse_config
from mx6milter.ctl.journal import _details, percentile, render_decision, suggestion
from mx6milter.journal import fingerprint, lacked, network48, parse_checks
from mx6milter.model import Finding, Session


def net48(client_ip):
    return network48(Session(client_ip=client_ip))


def test_network48_of_ipv6_clients_only():
    assert net48("2001:db8:1:2::3") == "2001:db8:1::/48"
    assert net48("IPv6:2001:DB8:1::3") == "2001:db8:1::/48"
    assert net48("[2001:db8:1::3]") == "2001:db8:1::/48"
    assert net48(" ipv6:2001:db8:1::3") == "2001:db8:1::/48"     # as the decision reads it
    assert net48("fe80::1%eth0") == "fe80::/48"
    assert net48("192.0.2.1") == net48("") == net48(None) == net48("junk") == ""
    assert net48("::ffff:192.0.2.1") == ""                        # IPv4 for the decision too


@given(st.text(max_size=60))
def test_network48_never_raises(text):
    assert net48(text) in ("",) or net48(text).endswith("/48")


@given(st.text(), st.text(), st.text(), st.lists(st.text(), max_size=5))
def test_fingerprint_is_short_hex_for_any_input(message_id, header_from, mail_from, rcpts):
    digest = fingerprint(message_id, header_from, mail_from, rcpts)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert digest == fingerprint(message_id, header_from, mail_from, list(reversed(rcpts)))


def test_lacked_lists_each_failed_check_once():
    checks = [Finding("session", "ipv6"), Finding("spf", "pass", "a@b"), Finding("ip", "miss"),
              Finding("dkim", "fail", "x"), Finding("dkim", "fail", "y"), Finding("domain", "miss")]
    assert lacked(checks) == ["ip=miss", "dkim=fail", "domain=miss"]


def test_percentile_is_the_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.9) == 5.0
    values = [float(v) for v in range(1, 11)]
    assert (percentile(values, 0.5), percentile(values, 0.9)) == (5.0, 9.0)


def config(text=""):
    return parse_config(text, "t.conf")


def test_suggestion_whitelists_an_authenticated_domain_with_what_authenticated_it():
    details = {"domain": "example.net", "ways": ["dkim"], "net": "2001:db8:1::/48"}
    assert suggestion(config(), DEFAULT_CONFIG, "domain", details) == \
        "mx6ctl domain add example.net --require dkim"
    assert suggestion(config(), "/etc/my conf", "helo", {**details, "ways": ["dmarc", "spf"]}) == \
        shlex.join(["mx6ctl", "-c", "/etc/my conf", "domain", "add", "example.net"])


def test_suggestion_accepts_the_network_otherwise():
    details = {"domain": "example.net", "ways": [], "net": "2001:db8:1::/48"}
    assert suggestion(config(), DEFAULT_CONFIG, "domain", details) == \
        "mx6ctl green add 2001:db8:1::/48"
    assert suggestion(config("[greenlist]\nmin_signals = 2\n"), DEFAULT_CONFIG, "net", details) == \
        "mx6ctl ip add 2001:db8:1::/48"
    assert suggestion(config("[greenlist]\nnetworks = no\n"), DEFAULT_CONFIG, "net", details) == \
        "mx6ctl ip add 2001:db8:1::/48"
    assert suggestion(config(), DEFAULT_CONFIG, "helo", {"domain": "", "ways": []}) == ""


@given(st.text(max_size=200))
def test_hostile_stream_values_read_back_without_raising(text):
    assert isinstance(parse_checks(text), list)
    assert isinstance(_details(text), dict)
    entry = {"t": text, "checks": text, "nrcpts": text, "rcpts": text, "qid": text}
    assert "queue id" in render_decision(entry)
    assert "queue id" in render_decision({})


def test_checks_round_trip_through_json():
    text = json.dumps([["spf", "pass", "a@b"], ["ip", "miss", ""], "junk", [1]])
    assert parse_checks(text) == [Finding("spf", "pass", "a@b"), Finding("ip", "miss", "")]


def test_a_fingerprint_outliving_the_counters_is_a_config_error():
    with pytest.raises(ConfigError, match="fingerprint_days"):
        config("[report]\nfingerprint_days = 9\nretention_days = 8\n")
    assert config("[report]\nfingerprint_days = 8\n").report.retention_days == 8
