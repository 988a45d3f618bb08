"""Fallbacks followed to IPv4 through a real Postfix, read back with mx6ctl report and why.

A message refused over IPv6 (451) and then sent again over IPv4, as a sender
moving to the next MX would, is counted recovered with its delay; one never
sent again is listed as not recovered, with the command that greenlists its
network; that command, run as printed, lets the network's next message in.
"""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from e2e import Ledger, loopback, postfix_with_milter, smtp_send
from e2e import live_redis  # noqa: F401  (fixture)
from milterd import MX6CTL, mx6ctl
from servers import wait_for

RETRIED = "2001:db8:a7::e2e"      # refused, then the same message over IPv4
GIVES_UP = "2001:db8:a8::e2e"     # refused, never sent again


@pytest.fixture(scope="module")
def mta(live_redis, dns_server, tmp_path_factory):  # noqa: F811 (the fixture)
    with loopback((RETRIED, GIVES_UP)), postfix_with_milter(
            tmp_path_factory.mktemp("journal"), live_redis.url, dns_server.nameservers,
            "[milter]\nsocket_mode = 0666\n[greenlist]\nfcrdns = no\n",
            main_cf="smtpd_milters = unix:mx6milter/mx6milter.sock\n"
                    "milter_default_action = tempfail\n") as (postfix, milter):
        yield postfix, milter, Ledger()       # one ledger: the sink holds every test's mail


def report(milter) -> dict:
    return json.loads(mx6ctl(milter.conf, "report", "--json"))


def test_a_refused_message_sent_again_over_ipv4_is_counted_recovered(mta):
    postfix, milter, ledger = mta
    retried_id, gives_up_id = ledger.new_id(), ledger.new_id()
    raw = {msg_id: _message(msg_id) for msg_id in (retried_id, gives_up_id)}
    assert ledger.send(postfix.port, RETRIED, raw[retried_id], msg_id=retried_id).code == 451
    assert ledger.send(postfix.port, GIVES_UP, raw[gives_up_id], msg_id=gives_up_id).code == 451
    # The sender moves on to IPv4 with the very same message.
    assert ledger.send(postfix.port, "127.0.0.1", raw[retried_id], msg_id=retried_id).code == 250
    ledger.refused.pop(retried_id)           # refused once, then delivered: both true
    ledger.check(postfix)
    wait_for(lambda: report(milter)["recovered_over_ipv4"]["count"] == 1, timeout=20,
             what="the recovery in mx6ctl report")
    result = report(milter)
    assert result["fallbacks"] == 2
    recovered = result["recovered_over_ipv4"]
    assert recovered["share"] == 0.5
    assert 0 <= recovered["delay_p50_seconds"] == recovered["delay_p90_seconds"] < 120
    assert [(row["network"], row["fallbacks"]) for row in result["not_recovered"]] == \
        [("2001:db8:a8::/48", 1)]
    command = result["not_recovered"][0]["suggestion"]
    assert command == shlex.join(["mx6ctl", "-c", str(milter.conf), "mishandle4xx", "add",
                                  "2001:db8:a8::/48"])
    subprocess.run([MX6CTL, *shlex.split(command)[1:]], check=True, capture_output=True)
    again = ledger.new_id()
    assert ledger.send(postfix.port, GIVES_UP, _message(again), msg_id=again).code == 250
    message = ledger.check(postfix)[again]
    assert message.header("X-MX6-Verdict")[0].startswith("greenlisted; subject-to-content-filtering;"
                                                         " evidence=mishandle4xx=pass(2001:db8:a8::/48")


def test_why_shows_the_refused_message_by_client_and_queue_id(mta):
    postfix, milter, ledger = mta
    msg_id = ledger.new_id()
    assert smtp_send(postfix.port, RETRIED, "why@example.net", ["user@example.org"],
                     _message(msg_id, sender="why@example.net")).code == 451
    wait_for(lambda: "why@example.net" in mx6ctl(milter.conf, "why", "--from", "why@example.net"),
             timeout=20, what="the decision in mx6ctl why")
    text = mx6ctl(milter.conf, "why", "--from", "why@example.net")
    assert f"client        [{RETRIED}]" in text and "verdict       none, tempfail" in text
    queue_id = text.split("queue id ", 1)[1].split()[0]
    assert f"{queue_id}: milter-reject: END-OF-MESSAGE" in postfix.log()   # Postfix's own id
    assert mx6ctl(milter.conf, "why", queue_id) == text


def _message(msg_id: str, sender: str = "sender@example.net") -> bytes:
    return (f"From: <{sender}>\r\nTo: user@example.org\r\nSubject: retried\r\n"
            f"Message-ID: {msg_id}\r\n\r\nHello.\r\n").encode()


def test_report_mode_names_the_command_that_accepts_the_next_such_message(mta):
    postfix, milter, ledger = mta
    milter.reload(milter.text.replace("[policy]\n", "[policy]\nmode = report\n"))
    milter.wait_log("configuration reloaded")
    sent = [ledger.new_id(), ledger.new_id()]
    for msg_id in sent:       # accepted in report mode, marked with what would have happened
        assert ledger.send(postfix.port, RETRIED, _message(msg_id), msg_id=msg_id).code == 250
    arrived = ledger.check(postfix)
    verdicts = [arrived[msg_id].header("X-MX6-Verdict")[0] for msg_id in sent]
    # nothing authenticated these messages: 4.7.26
    assert all(v.startswith("none; action=fallback-reported; reply=451 4.7.26") for v in verdicts)

    def top_network():
        rows = [r for r in report(milter)["would_fall_back"] if r["by"] == "net"]
        return rows[0] if rows and rows[0]["messages"] >= 2 else None
    wait_for(top_network, timeout=20, what="the senders in mx6ctl report")
    row = top_network()
    assert row["sender"] == "2001:db8:a7::/48" and "network=miss" in row["lacked"]
    subprocess.run([MX6CTL, *shlex.split(row["suggestion"])[1:]], check=True, capture_output=True)
    msg_id = ledger.new_id()
    assert ledger.send(postfix.port, RETRIED, _message(msg_id), msg_id=msg_id).code == 250
    verdict = ledger.check(postfix)[msg_id].header("X-MX6-Verdict")[0]
    assert verdict.startswith("greenlisted; subject-to-content-filtering; "
                              "evidence=network=pass(2001:db8:a7::/48")
