"""[milter] processes = 2: a supervisor binds once and forks workers that share the socket.

The real daemon (``mx6milter -c CONF``, started as root, running as nobody)
with a real Redis and BIND; concurrent milter sessions from the benchmark's
protocol client (bench/milterclient.py), drain checked with miltertest.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from bench.milterclient import Envelope, run_load
from milterd import MilterDaemon, listener_nodelay, mx6ctl, proc_ids, wait_gone
from servers import free_port, wait_for
from test_daemon_ops import NOBODY, open_dir, start_slow_session  # noqa: F401 (fixture)

MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
           b"Subject: processes\r\nMessage-ID: <processes@example.net>\r\n\r\nHello.\r\n")
DECISION = re.compile(r"mx6milter\[(\d+)\] INFO queue_id=(\S+) client=\[2001:db8:6::")


@pytest.fixture
def milter(open_dir, redis_url, dns_server):
    with MilterDaemon(open_dir, f"unix:{open_dir}/run/m.sock", redis_url,
                      extra="[milter]\nprocesses = 2\nuser = nobody\nsocket_group = postfix\n",
                      nameservers=dns_server.nameservers) as daemon:
        mx6ctl(daemon.conf, "ip", "add", "2001:db8:6::/48")
        wait_for(lambda: len(workers(daemon.pid)) == 2, timeout=10, what="two workers")
        yield daemon


def workers(pid: int) -> list:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return sorted(int(p) for p in text.split())


def send(milter, count: int, sessions: int = 8, tag: str = "m") -> list:
    """COUNT whitelisted IPv6 messages over SESSIONS concurrent connections; their verdicts."""
    envelopes = [Envelope(f"2001:db8:6::{i % 200 + 1:x}", "mail.example.net", "sender@example.net",
                          ("user@example.org",), MESSAGE, queue_id=f"{tag}{i}")
                 for i in range(count)]
    result = run_load(milter.socket, envelopes, sessions)
    assert result.errors == 0
    assert [v.action for v in result.verdicts] == ["accept"] * count
    return result.verdicts


def deciders(milter, tag: str) -> set:
    """The pids that logged a decision for the messages whose queue id starts with TAG."""
    return {int(pid) for pid, queue_id in DECISION.findall(milter.log()) if queue_id.startswith(tag)}


def test_both_workers_decide_as_nobody_on_the_shared_socket(milter):
    pids = workers(milter.pid)
    for pid in [milter.pid, *pids]:          # privileges dropped before the fork
        assert proc_ids(pid)["Uid"] == [NOBODY.pw_uid] * 4
    assert f"listening on {milter.socket}, mode defensive, 2 worker processes" in milter.log()
    send(milter, 300, sessions=16, tag="a")
    wait_for(lambda: len(DECISION.findall(milter.log())) >= 300, timeout=10, what="300 decisions")
    assert deciders(milter, "a") == set(pids)   # the kernel spread the connections over both


def test_sighup_reaches_every_worker_and_a_bad_config_is_refused_by_the_parent(milter):
    pids = workers(milter.pid)
    original = milter.conf.read_text()
    milter.reload(original.replace("[policy]\n", "[policy]\nmode = mx6\n"))
    wait_for(lambda: milter.log().count("configuration reloaded") == 2, timeout=10,
             what="both workers reloaded")
    reloaded = re.findall(r"mx6milter\[(\d+)\] INFO configuration reloaded", milter.log())
    assert sorted(map(int, reloaded)) == pids
    unknown = [Envelope(f"2001:db8:99::{i + 1:x}", "mail.example.net", "sender@example.net",
                        ("user@example.org",), MESSAGE, queue_id=f"u{i}") for i in range(40)]
    result = run_load(milter.socket, unknown, 8)
    assert result.errors == 0 and len(result.verdicts) == 40
    assert {v.reply[:3] for v in result.verdicts} == {b"550"}   # mode mx6 in both workers

    milter.reload(original.replace("[policy]\n", "[policy]\nmode = sometimes\n"))
    milter.wait_log("reload refused, keeping the running configuration")
    time.sleep(0.5)
    refused = re.findall(r"mx6milter\[(\d+)\] ERROR reload refused", milter.log())
    assert refused == [str(milter.pid)]           # validated once, in the parent; not forwarded
    assert milter.log().count("configuration reloaded") == 2
    assert milter.process.poll() is None and workers(milter.pid) == pids
    send(milter, 40, tag="s")


def test_a_killed_worker_is_replaced_and_mail_keeps_flowing(milter):
    victim, survivor = workers(milter.pid)
    os.kill(victim, signal.SIGKILL)
    milter.wait_log(f"(pid {victim}) died: killed by signal 9; restarting it in")
    send(milter, 40, tag="k")                     # the survivor serves meanwhile
    wait_for(lambda: len(workers(milter.pid)) == 2, timeout=10, what="a replacement worker")
    replacement = (set(workers(milter.pid)) - {survivor}).pop()
    assert replacement != victim
    wait_for(lambda: "listening on" in milter.log().split(f"(pid {victim}) died")[1],
             timeout=10, what="the replacement listening")
    send(milter, 200, sessions=16, tag="n")
    assert deciders(milter, "n") == {survivor, replacement}


def test_sigterm_drains_every_worker_and_leaves_no_process(milter):
    pids = workers(milter.pid)
    session = start_slow_session(milter, pause=2, client="2001:db8:6::10", expect="accept")
    started = time.monotonic()
    for pid in [milter.pid, *pids]:   # as systemd's KillMode=control-group does; the
        os.kill(pid, signal.SIGTERM)  # worker then has it twice, and must still drain
    milter.wait_log("1 in flight")
    output = session.communicate(timeout=30)[0]
    assert session.returncode == 0, output        # answered after the SIGTERM
    assert milter.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 6         # the 2 s session, then a prompt stop
    for pid in pids:
        wait_gone(pid, timeout=5)
    assert milter.log().count("INFO stopped") == 3   # both workers and the parent
    assert "second stop signal" not in milter.log()


def test_a_removed_socket_file_stops_everyone_with_status_1(milter):
    """What is left when a worker's libmilter ends on its own and removes the file."""
    pids = workers(milter.pid)
    milter.unix_path.unlink()
    assert milter.process.wait(timeout=10) == 1
    for pid in pids:
        wait_gone(pid, timeout=5)
    assert "socket file of " + milter.socket + " is gone or replaced" in milter.log()


def test_tcp_socket_keeps_tcp_nodelay_in_the_workers(tmp_path, redis_url):
    port = free_port()
    with MilterDaemon(tmp_path, f"inet:{port}@127.0.0.1", redis_url,
                      extra="[milter]\nprocesses = 2\n") as milter:
        wait_for(lambda: len(workers(milter.pid)) == 2, timeout=10, what="two workers")
        for pid in workers(milter.pid):
            assert listener_nodelay(pid, port)
        envelopes = [Envelope("192.0.2.10", "mail.example.net", "sender@example.net",
                              ("user@example.org",), MESSAGE) for _ in range(20)]
        result = run_load(f"inet:{port}@127.0.0.1", envelopes, 4)
        assert result.errors == 0 and [v.action for v in result.verdicts] == ["accept"] * 20
