"""Health as monitoring and systemd see it: mx6ctl check's exit codes with Redis, DNS or
the milter down, and the daemon's sd_notify readiness and journal priorities."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import threading

import pytest

from milterd import MX6CTL, MX6MILTER, MilterDaemon, merge_ini, milter_ini
from servers import free_port


@pytest.fixture
def milter(tmp_path, redis_url, dns_server):
    with MilterDaemon(tmp_path / "milter", f"unix:{tmp_path}/m.sock", redis_url,
                      nameservers=dns_server.nameservers) as daemon:
        yield daemon


def check(conf, *args: str) -> tuple:
    result = subprocess.run([MX6CTL, "-c", str(conf), "check", "--dns-name", "example.com",
                             "--timeout", "10", *args], capture_output=True, text=True, timeout=60)
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def states(lines: list) -> dict:
    found = {}
    for line in lines:
        m = re.fullmatch(r"(REDIS|DNS|MILTER) (OK|WARNING|CRITICAL) - (.+)", line)
        assert m, line
        found[m.group(1)] = m.group(2)
    return found


def variant(milter: MilterDaemon, extra: str):
    """A copy of the daemon's config with EXTRA merged in, for mx6ctl to read."""
    path = milter.dir / "variant.conf"
    path.write_text(merge_ini(milter.text, extra))
    return path


def test_all_up(milter):
    code, lines = check(milter.conf)
    assert code == 0, lines
    assert states(lines) == {"REDIS": "OK", "DNS": "OK", "MILTER": "OK"}
    assert all(re.search(r" \| time=\d+\.\d+s$", line) for line in lines)
    assert "schema 1" in lines[0] + lines[1] + lines[2]


def test_redis_down(milter, redis_server):
    redis_server.stop()
    try:
        code, lines = check(milter.conf)
    finally:
        redis_server.start()
    assert code == 2
    assert lines[0].startswith("REDIS CRITICAL - redis://127.0.0.1:")   # the worst first
    assert states(lines) == {"REDIS": "CRITICAL", "DNS": "OK", "MILTER": "OK"}


def test_redis_with_a_newer_schema_warns(milter, redis_server):
    redis_server.client().set("mx6:schema", "7")
    code, lines = check(milter.conf)
    assert code == 1
    assert lines[0].startswith("REDIS WARNING - ") and "schema 7" in lines[0]
    assert states(lines) == {"REDIS": "WARNING", "DNS": "OK", "MILTER": "OK"}


def test_dns_down(milter):
    code, lines = check(variant(milter, f"[dns]\nnameservers = 127.0.0.1:{free_port()}\n"))
    assert code == 2
    assert lines[0].startswith("DNS CRITICAL - example.com/NS")
    assert states(lines) == {"REDIS": "OK", "DNS": "CRITICAL", "MILTER": "OK"}


def test_milter_down(milter):
    assert milter.terminate() == 0
    code, lines = check(milter.conf)
    assert code == 2
    assert lines[0].startswith(f"MILTER CRITICAL - {milter.socket}: ")
    assert states(lines) == {"REDIS": "OK", "DNS": "OK", "MILTER": "CRITICAL"}


def test_an_smtp_server_on_the_milter_socket_is_no_milter(milter):
    """A misconfigured socket that reaches an SMTP server: its banner is no milter packet."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        def greet():
            peer, _ = server.accept()
            with peer:
                peer.sendall(b"220 mx.example.org ESMTP\r\n")
                peer.recv(4096)
        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        port = server.getsockname()[1]
        code, lines = check(variant(milter, f"[milter]\nsocket = inet:{port}@127.0.0.1\n"))
        thread.join(timeout=30)
    assert code == 2
    assert lines[0].startswith(f"MILTER CRITICAL - inet:{port}@127.0.0.1: answered a packet of ")
    assert lines[0].endswith("bytes: not a milter?")


def drain(sock: socket.socket) -> list:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("processes", [1, 2])
def test_ready_and_stopping_notified_and_journal_priorities(tmp_path, redis_url, monkeypatch,
                                                             processes):
    """systemd's side, played by a unix datagram socket (NOTIFY_SOCKET) and a log file that
    JOURNAL_STREAM names as the journal."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    daemon = MilterDaemon(tmp_path / "milter", f"unix:{tmp_path}/m.sock", redis_url,
                          f"[milter]\nprocesses = {processes}\n")
    daemon.dir.mkdir()
    daemon.log_path.touch()
    info = os.stat(daemon.log_path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    with daemon:
        assert notify.recv(4096) == b"READY=1"
        assert daemon.answers()
        assert daemon.terminate() == 0
    assert drain(notify) == [b"STOPPING=1"]          # once, from the main process only
    lines = daemon.log().splitlines()
    assert lines and all(re.match(r"<[2-7]>mx6milter", line) for line in lines), lines
    assert any(line.startswith("<6>") and "listening on" in line for line in lines)
    # nameservers 127.0.0.1:9 answer nothing: the start-up check warns
    assert any(line.startswith("<4>") and "DNS does not answer" in line for line in lines)


def test_a_metrics_address_in_use_is_a_config_error(tmp_path, redis_url):
    """Configured metrics that cannot be served stop the start (exit 2, the key named),
    rather than a daemon running without the metrics the operator watches."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        conf = tmp_path / "mx6milter.conf"
        conf.write_text(milter_ini(f"unix:{tmp_path}/m.sock", redis_url,
                                   extra=f"[metrics]\nlisten = 127.0.0.1:{port}\n"))
        result = subprocess.run([MX6MILTER, "-c", str(conf)], capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"[metrics] listen = 127.0.0.1:{port}: cannot listen: Address already in use" \
        in result.stderr
