"""The journal through the milter's callbacks (pymilter's TestCtx), real Redis and BIND:
fallbacks followed to IPv4, mx6ctl report and its suggestions run for real, mx6ctl why.

example.net publishes SPF for 2001:db8:6::/48 and 192.0.2.0/24 with DMARC; the
clock is injected, so delays are exact without sleeping.
"""
import json
import shlex
import time

import Milter
import pytest
import redis

from mx6milter import ctl
from mx6milter.journal import Journal, fingerprint
from mx6milter.store import Store

from conftest import make_config
from ctl_runner import Ctl
from harness import run_milter
from servers import CountingConnection

QUIET = "[greenlist]\nfcrdns = no\n"


class Clock:
    """Half an hour ago, moved by the tests: inside report's default 24 hours."""
    def __init__(self):
        self.now = time.time() - 1800

    def __call__(self):
        return self.now


def message(number: int, sender="sender@example.net") -> bytes:
    return (f"From: Sender <{sender}>\r\nTo: user@example.org\r\nSubject: n{number}\r\n"
            f"Message-ID: <{number}@example.net>\r\n\r\nHello {number}.\r\n").encode()


@pytest.fixture
def setup(evaluator_factory, redis_url, dns_server, tmp_path):
    """(evaluator with an injected journal clock, mx6ctl on the same config, clock)."""
    def build(extra=QUIET):
        evaluator = evaluator_factory(extra)
        clock = Clock()
        evaluator.journal = Journal(evaluator.store, evaluator.config.report, clock=clock,
                                    on_recovered=evaluator.metrics.recovered)
        return evaluator, Ctl(tmp_path, redis_url, dns_server.nameservers, extra), clock
    return build


def send(evaluator, number, client_ip, qid="4ABCDEF", rcpts=("user@example.org",), **kw):
    result = run_milter(evaluator, message(number, **kw), client_ip=client_ip, rcpts=rcpts,
                        macros={"i": qid}, mail_from=kw.get("sender", "sender@example.net"))
    assert evaluator.journal.flush()
    return result


def report(mx6ctl, *args) -> dict:
    run = mx6ctl("report", "--json", *args)
    assert run.rc == 0, run.err
    return json.loads(run.out)


def test_fallback_recovered_over_ipv4_with_its_delay_and_one_never_resent(setup):
    evaluator, mx6ctl, clock = setup()
    assert send(evaluator, 1, "2001:db8:77::1").rc == Milter.TEMPFAIL
    assert send(evaluator, 2, "2001:db8:78::1").rc == Milter.TEMPFAIL
    clock.now += 600
    assert send(evaluator, 1, "192.0.2.10").rc == Milter.ACCEPT       # the retry over IPv4
    assert send(evaluator, 3, "192.0.2.10").rc == Milter.ACCEPT       # never an IPv6 fallback
    assert send(evaluator, 1, "192.0.2.11").rc == Milter.ACCEPT       # a second copy: counted once
    assert (evaluator.journal.fallbacks, evaluator.journal.recovered) == (2, 1)
    registry = evaluator.metrics.registry        # the recovery reaches the metrics too
    assert registry.get_sample_value("mx6milter_fallbacks_recovered_total") == 1
    assert registry.get_sample_value("mx6milter_fallback_recovery_seconds_sum") == pytest.approx(600, abs=1)
    result = report(mx6ctl)
    assert result["decisions"] == {"whitelisted": 0, "greenlisted": 0, "none": 2}
    assert result["actions"] == {"none/tempfail": 2}
    assert result["reasons"] == {"not-authenticated": 2}
    assert result["fallbacks"] == 2
    assert result["recovered_over_ipv4"] == {"count": 1, "share": 0.5, "delay_p50_seconds": 600.0,
                                             "delay_p90_seconds": 600.0}
    assert result["not_recovered"] == [{
        "from_domain": "", "network": "2001:db8:78::/48", "fallbacks": 1,
        "suggestion": shlex.join(["mx6ctl", "-c", str(mx6ctl.config), "mishandle4xx", "add",
                                  "2001:db8:78::/48"])}]
    # The suggested command, run as printed, greenlists that network's next message.
    assert ctl.main(shlex.split(result["not_recovered"][0]["suggestion"])[1:]) == 0
    assert send(evaluator, 4, "2001:db8:78::2").rc == Milter.ACCEPT


def test_recipients_in_another_order_are_the_same_message():
    assert fingerprint("<1@x>", "A <a@x>", "a@x", ["b@y", "C@y"]) == \
        fingerprint("<1@x>", "A  <a@x>", "A@X", ["c@y", "b@y", "b@y"])
    assert fingerprint("<1@x>", "A <a@x>", "a@x", ["b@y"]) != \
        fingerprint("<2@x>", "A <a@x>", "a@x", ["b@y"])


def test_report_mode_names_the_command_that_accepts_the_next_message(setup):
    evaluator, mx6ctl, _clock = setup(QUIET + "[policy]\nmode = report\n")
    for number in range(3):                # SPF pass for example.net, aligned: DMARC pass
        result = send(evaluator, number, "2001:db8:6::10")
        assert result.rc == Milter.ACCEPT
        assert result.header("X-MX6-Verdict").startswith("none;")
    send(evaluator, 9, "2001:db8:79::9", sender="someone@example.org")
    rows = report(mx6ctl)["would_fall_back"]
    by_domain = [row for row in rows if row["by"] == "domain"]
    assert by_domain[0]["sender"] == "example.net" and by_domain[0]["messages"] == 3
    assert by_domain[0]["authenticated"] == ["dmarc", "spf"]
    assert "ip=miss" in by_domain[0]["lacked"] and "domain=miss" in by_domain[0]["lacked"]
    by_net = [row for row in rows if row["by"] == "net"]
    assert [(r["sender"], r["messages"]) for r in by_net] == [("2001:db8:6::/48", 3),
                                                             ("2001:db8:79::/48", 1)]
    assert by_net[1]["suggestion"].endswith("green add 2001:db8:79::/48")
    command = by_domain[0]["suggestion"]
    assert command == shlex.join(["mx6ctl", "-c", str(mx6ctl.config), "domain", "add",
                                  "example.net"])
    assert ctl.main(shlex.split(command)[1:]) == 0
    after = send(evaluator, 5, "2001:db8:6::10")
    assert after.header("X-MX6-Verdict").startswith("whitelisted;")
    text = mx6ctl("report")
    assert text.rc == 0 and "accept: " + command in text.out


def test_why_prints_every_check_by_queue_id_client_and_sender(setup):
    evaluator, mx6ctl, _clock = setup()
    send(evaluator, 1, "2001:db8:77::1", qid="4QAAA1")
    send(evaluator, 2, "2001:db8:6::10", qid="4QAAA2", rcpts=("a@example.org", "b@example.org"))
    send(evaluator, 3, "192.0.2.10", qid="4QAAA3")            # IPv4: not judged, not kept
    run = mx6ctl("why", "4QAAA1")
    assert run.rc == 0, run.err
    assert "queue id 4QAAA1" in run.out and "4QAAA2" not in run.out
    assert "client        [2001:db8:77::1]" in run.out
    assert "verdict       none, tempfail: not-authenticated" in run.out
    assert "answered 451 4.7.26" in run.out
    for kind in ("spf", "dkim", "dmarc", "ip", "domain", "addressbook", "network"):
        assert f"\n    {kind} " in run.out, kind
    by_client = mx6ctl("why", "--client", "2001:DB8:6:0::10", "--json")
    found = json.loads(by_client.out)
    assert [d["qid"] for d in found] == ["4QAAA2"]
    assert found[0]["rcpts"] == "a@example.org b@example.org"
    assert ["spf", "pass", "sender@example.net"] in found[0]["checks"]
    by_sender = json.loads(mx6ctl("why", "--from", "Sender@Example.NET", "--json").out)
    assert [d["qid"] for d in by_sender] == ["4QAAA1", "4QAAA2"]
    assert mx6ctl("why", "4QAAA3").rc == 1
    assert mx6ctl("why", "4QAAA1", "--client", "::1").rc == 2
    assert mx6ctl("why", "--client", "not-an-ip").rc == 2


def test_the_stream_and_the_boards_stay_bounded(setup):
    evaluator, mx6ctl, _clock = setup(QUIET + "[report]\nstream_length = 10\ntop_size = 3\n")
    for number in range(40):
        send(evaluator, number, f"2001:db8:{100 + number:x}::1", qid=f"Q{number}")
    client = evaluator.store.client
    assert client.xlen(evaluator.store._j("stream")) < 40
    assert report(mx6ctl, "--top", "50")["fallbacks"] == 40
    nets = [r for r in report(mx6ctl, "--top", "50")["would_fall_back"] if r["by"] == "net"]
    assert len(nets) == 3
    assert all(client.ttl(key) > 0 for key in client.scan_iter(evaluator.store._j("*"))
               if not key.endswith(":stream"))


def test_why_reads_the_stream_a_page_at_a_time_newest_first(setup):
    evaluator, _mx6ctl, _clock = setup()
    for number in range(12):
        send(evaluator, number, "2001:db8:77::1", qid=f"Q{number}")
    recent = list(evaluator.store.journal_recent(10, page=3))
    assert [fields["qid"] for _, fields in recent] == [f"Q{n}" for n in range(11, 1, -1)]


def test_redis_down_changes_nothing_for_ipv4_and_counts_the_failure(evaluator_factory, caplog):
    evaluator = evaluator_factory(QUIET)     # the journal alone writes to a Redis that is not there
    config = make_config(QUIET, "redis://127.0.0.1:1/0")
    evaluator.journal = Journal(Store.from_config(config.redis), config.report)
    for number in range(3):
        result = run_milter(evaluator, message(number), client_ip="192.0.2.10")
        assert result.rc == Milter.ACCEPT and result.changed == [] and result.added == []
    judged = run_milter(evaluator, message(4), client_ip="2001:db8:77::1")
    assert judged.rc == Milter.TEMPFAIL and judged.reply[0] == "451"
    assert evaluator.journal.flush()
    assert evaluator.journal.failed == 4 and evaluator.journal.recovered == 0
    first = next(r for r in caplog.records if r.name == "mx6milter.journal")
    assert first.getMessage().startswith("journal: Redis: ") and first.getMessage().endswith(
        "; 1 records not written so far (mx6ctl report undercounts)")


def test_report_and_why_with_redis_down_say_so_in_one_line(tmp_path):
    mx6ctl = Ctl(tmp_path, "redis://127.0.0.1:1/0")
    for argv in (("report",), ("why", "4ABC"), ("why", "--from", "a@example.net")):
        run = mx6ctl(*argv)
        assert run.rc == 1 and "Traceback" not in run.err and len(run.err.splitlines()) == 1, run


def test_report_refuses_a_window_longer_than_the_retention(setup):
    _evaluator, mx6ctl, _clock = setup()
    assert mx6ctl("report", "--since", "9d").rc == 2
    assert mx6ctl("report", "--since", "yesterday").rc == 2
    assert mx6ctl("report", "--since", "8d").rc == 0


def test_the_journal_writes_once_per_message_off_the_decisions_round_trip(evaluator_factory,
                                                                          redis_url):
    evaluator = evaluator_factory(QUIET)
    client = redis.Redis.from_url(redis_url, decode_responses=True,
                                  connection_class=CountingConnection)
    evaluator.journal = Journal(Store(client), evaluator.config.report)
    send(evaluator, 1, "2001:db8:77::1")                  # script loaded, connections made
    # A decision, an IPv4 message: one pipeline each, in the background. A recovery
    # (the fingerprint taken, then counted) two.
    for number, client_ip, trips in ((2, "2001:db8:77::1", 1), (3, "192.0.2.10", 1),
                                     (2, "192.0.2.10", 2)):
        CountingConnection.writes = 0
        send(evaluator, number, client_ip)
        assert CountingConnection.writes == trips, (number, client_ip)
    assert evaluator.journal.recovered == 1


def test_the_journal_reloads_its_script_after_a_redis_restart(setup):
    evaluator, mx6ctl, _clock = setup()
    evaluator.store.client.script_flush()
    send(evaluator, 1, "2001:db8:77::1")
    assert evaluator.journal.failed == 0
    result = report(mx6ctl)                      # counted once, not once per attempt
    assert result["decisions"]["none"] == 1 and result["fallbacks"] == 1
    assert result["would_fall_back"][0]["messages"] == 1
