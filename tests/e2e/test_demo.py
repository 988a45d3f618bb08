"""The README's first command: scripts/run.sh leaves Postfix + mx6milter + Redis running.

Runs the real script (on a free port instead of 2525), then the very commands
it prints: swaks over IPv6 (451), over IPv4 (accepted), mx6ctl to whitelist
::1, swaks over IPv6 again (accepted with the verdict header); then
``scripts/run.sh stop``. It uses Redis on 127.0.0.1:6379 and
/run/mx6milter/mx6milter.sock like the demo does, so it does not run while a
demo started by hand is up.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from postfix import free_dual_port, parse_dump

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "run"


def demo_running() -> bool:
    try:
        os.kill(int((RUN / "mx6milter.pid").read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def run(command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.mark.skipif(demo_running(), reason="a demo started by hand is running; not touching it")
def test_run_sh_demo_shows_both_outcomes_with_the_commands_it_prints():
    port = free_dual_port()
    sink = RUN / "postfix" / "sink"
    before = set(sink.iterdir()) if sink.is_dir() else set()
    env = {**os.environ, "MX6_DEMO_PORT": str(port)}
    whitelist = None
    try:
        started = run("scripts/run.sh", env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        commands = [line.strip() for line in started.stdout.splitlines()
                    if line.startswith("    ") and line.strip()]
        swaks6, swaks4, whitelist = commands
        assert swaks6.startswith("swaks --server ::1 ") and f"--port {port}" in swaks6
        assert swaks4.startswith("swaks --server 127.0.0.1 ")
        assert whitelist.endswith("ip add ::1/128")

        refused = run(swaks6)
        assert "<** 451-4.7.26 Not accepted over IPv6 from this sender" in refused.stdout, refused.stdout
        accepted4 = run(swaks4)
        assert "<-  250 2.0.0 Ok: queued" in accepted4.stdout, accepted4.stdout
        assert run(whitelist).returncode == 0
        accepted6 = run(swaks6)
        assert "<-  250 2.0.0 Ok: queued" in accepted6.stdout, accepted6.stdout
    finally:
        if whitelist:
            run(whitelist.replace(" ip add ", " ip remove "))    # leave the demo's Redis as found
        stopped = run("scripts/run.sh stop")
    assert stopped.returncode == 0 and "stopped Postfix" in stopped.stdout
    assert subprocess.run(["postfix", "-c", str(RUN / "postfix" / "etc"), "status"],
                          capture_output=True).returncode != 0      # no master left
    arrived = [parse_dump(path) for path in set(sink.iterdir()) - before]
    verdicts = sorted(any(f.startswith("X-MX6-Verdict: whitelisted;") for f in m.header_lines())
                      for m in arrived)
    assert verdicts == [False, True]      # the IPv4 message untouched, the IPv6 one marked
