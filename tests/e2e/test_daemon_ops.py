"""Running mx6milter as a service: unprivileged after binding, reload, drain.

The real daemon (``mx6milter -c CONF``) with a real Redis and BIND, driven by
miltertest (tests/support/miltertest/*.lua) as the MTA.
"""
from __future__ import annotations

import grp
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from milterd import MX6MILTER, MilterDaemon, milter_ini, mx6ctl, proc_ids
from miltertest_driver import SCRIPTS, expected_reply, miltertest

NOBODY = pwd.getpwnam("nobody")
POSTFIX_GID = grp.getgrnam("postfix").gr_gid


@pytest.fixture
def open_dir():
    """A directory user nobody can reach (pytest's tmp_path sits under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="mx6-milterd-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def milter(open_dir, redis_url, dns_server):
    with MilterDaemon(open_dir, f"unix:{open_dir}/run/m.sock", redis_url,
                      extra="[milter]\nuser = nobody\nsocket_group = postfix\n",
                      nameservers=dns_server.nameservers) as daemon:
        mx6ctl(daemon.conf, "ip", "add", "2001:db8:6::/48")
        yield daemon


def start_slow_session(milter, pause: float, client="2001:db8:99::1", expect="fallback"):
    """A miltertest session that is in flight (between RCPT and DATA) when this returns."""
    process = subprocess.Popen(
        # stdbuf: the "in flight" line must reach us now, not when miltertest exits
        ["stdbuf", "-oL", "miltertest", "-s", str(SCRIPTS / "slow_session.lua"),
         "-D", f"DIR={SCRIPTS}", "-D", f"SOCKET={milter.socket}", "-D", f"CLIENT={client}",
         "-D", f"PAUSE={pause}", "-D", f"EXPECT={expect}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    assert "in flight" in line, line + process.stdout.read()
    return process


def test_binds_as_root_then_runs_as_nobody_with_the_socket_given_to_postfix(milter):
    ids = proc_ids(milter.pid)
    assert ids["Uid"] == [NOBODY.pw_uid] * 4          # real, effective, saved, filesystem
    assert ids["Gid"] == [NOBODY.pw_gid] * 4
    assert 0 not in ids["Groups"]
    info = milter.unix_path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY.pw_uid, POSTFIX_GID, 0o660)
    directory = milter.unix_path.parent.stat()      # created by the daemon: its own, postfix may enter
    assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == \
        (NOBODY.pw_uid, POSTFIX_GID, 0o750)
    assert f"running as uid {NOBODY.pw_uid}" in milter.log()
    miltertest("ipv6_accept.lua", milter.socket, CLIENT="2001:db8:6::10",
               VERDICT=" whitelisted; evidence=ip=pass(2001:db8:6::/48 source=local); "
                       "mode=defensive; by=mx.example.org")


@pytest.mark.parametrize("key, value, message", [
    ("user", "no-such-user-mx6", "[milter] user = 'no-such-user-mx6': no such user"),
    ("socket_group", "no-such-group-mx6", "[milter] socket_group = 'no-such-group-mx6': no such group"),
    ("user", "root:x", "[milter] user = 'root:x': expected a user or group name"),
])
def test_bad_user_or_group_stops_the_start_with_status_2(tmp_path, redis_url, key, value, message):
    conf = tmp_path / "m.conf"
    conf.write_text(milter_ini(f"unix:{tmp_path}/m.sock", redis_url, extra=f"[milter]\n{key} = {value}\n"))
    for check in ([], ["--check-config"]):
        result = subprocess.run([MX6MILTER, "-c", str(conf), *check], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2
        assert message in result.stderr
        assert result.stderr.startswith(f"mx6milter: {conf}:"), result.stderr   # file and line
    assert not (tmp_path / "m.sock").exists()


def test_sighup_reload_and_a_bad_config_is_refused_with_the_old_kept(milter):
    original = milter.conf.read_text()
    mx6 = original.replace("[policy]\n", "[policy]\nmode = mx6\n")
    milter.reload(mx6)                     # read back as nobody: the daemon dropped root
    milter.wait_log("configuration reloaded")
    reply550 = expected_reply(milter, "2001:db8:99::1")
    assert reply550.startswith("550-5.5.7 ")
    miltertest("ipv6_fallback.lua", milter.socket, CLIENT="2001:db8:99::1", REPLY=reply550)

    milter.reload(mx6.replace("mode = mx6", "mode = sometimes"))
    milter.wait_log("reload refused, keeping the running configuration")
    assert "[policy] mode = 'sometimes'" in milter.log()
    assert milter.process.poll() is None
    miltertest("ipv6_fallback.lua", milter.socket, CLIENT="2001:db8:99::1", REPLY=reply550)

    milter.conf.write_text(original)
    milter.conf.chmod(0o600)              # root may read it, the running daemon may not
    milter.process.send_signal(signal.SIGHUP)
    milter.wait_log("Permission denied")
    miltertest("ipv6_fallback.lua", milter.socket, CLIENT="2001:db8:99::1", REPLY=reply550)


def test_many_sighups_in_a_row_only_reload(milter):
    """libmilter has its own signal thread that stops on SIGHUP; ours must win."""
    for _ in range(20):
        milter.process.send_signal(signal.SIGHUP)
        time.sleep(0.02)
    time.sleep(0.5)
    assert milter.process.poll() is None
    assert milter.log().count("configuration reloaded") >= 1
    miltertest("not_judged.lua", milter.socket, CLIENT="192.0.2.10", AUTH="", READ_BODY="yes")


def test_sigterm_drains_the_session_in_flight_and_refuses_new_ones(milter):
    session = start_slow_session(milter, pause=3)
    started = time.monotonic()
    milter.process.send_signal(signal.SIGTERM)
    milter.wait_log("stopping on signal: no new sessions; 1 in flight")
    miltertest("refused_at_connect.lua", milter.socket, CLIENT="192.0.2.10")
    output = session.communicate(timeout=30)[0]
    assert session.returncode == 0, output          # answered after the SIGTERM
    assert milter.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 10          # exits once the session is done


def test_drain_timeout_bounds_the_wait(tmp_path, redis_url):
    with MilterDaemon(tmp_path, f"unix:{tmp_path}/m.sock", redis_url,
                      extra="[milter]\ndrain_timeout = 1\n") as milter:
        session = start_slow_session(milter, pause=8, client="192.0.2.10", expect="accept")
        started = time.monotonic()
        milter.process.send_signal(signal.SIGTERM)
        assert milter.process.wait(timeout=30) == 0
        assert 0.9 < time.monotonic() - started < 5
        assert "drain_timeout: 1 sessions still open" in milter.log()
        session.communicate(timeout=30)
        assert session.returncode != 0                  # cut off: its MTA tempfails


def test_second_sigterm_stops_without_waiting(tmp_path, redis_url):
    with MilterDaemon(tmp_path, f"unix:{tmp_path}/m.sock", redis_url) as milter:
        session = start_slow_session(milter, pause=8, client="192.0.2.10", expect="accept")
        started = time.monotonic()
        milter.process.send_signal(signal.SIGTERM)
        milter.wait_log("1 in flight")
        milter.process.send_signal(signal.SIGTERM)
        assert milter.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 5
        assert "second stop signal" in milter.log()
        session.communicate(timeout=30)


def test_startup_self_check_warns_about_dns_and_starts_anyway(tmp_path, redis_url):
    """Nothing answers DNS on 127.0.0.1:9: a warning, and IPv4 mail is served."""
    with MilterDaemon(tmp_path, f"unix:{tmp_path}/m.sock", redis_url,
                      nameservers="127.0.0.1:9") as milter:
        assert "startup check: DNS does not answer" in milter.log()
        assert "startup check: Redis" not in milter.log()
        miltertest("not_judged.lua", milter.socket, CLIENT="192.0.2.10", AUTH="", READ_BODY="yes")


def test_startup_records_the_schema_and_warns_about_a_newer_one(tmp_path, redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with MilterDaemon(tmp_path, f"unix:{tmp_path}/m.sock", redis_url) as milter:
        assert client.get("mx6:schema") == "1"
        assert "schema version" not in milter.log()
    client.set("mx6:schema", "9")
    (tmp_path / "newer").mkdir()
    with MilterDaemon(tmp_path / "newer", f"unix:{tmp_path}/m2.sock", redis_url) as milter:
        assert "Redis holds schema version 9, this mx6milter reads 1" in milter.log()
        miltertest("not_judged.lua", milter.socket, CLIENT="192.0.2.10", AUTH="", READ_BODY="yes")
