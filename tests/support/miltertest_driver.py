"""OpenDKIM's miltertest playing Sendmail against a milter socket: the scripts in
tests/support/miltertest/ and the reply the in-process milter gives for the same session.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from harness import run_milter
from milterd import MilterDaemon
from mx6milter.config import load_config
from mx6milter.service import build_evaluator

SCRIPTS = Path(__file__).resolve().parent / "miltertest"
AUTHSERV = "mx.example.org"
MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
           b"Subject: miltertest\r\nMessage-ID: <miltertest@example.net>\r\n\r\nHello.\r\n")


def miltertest(script: str, socket: str, **defines) -> str:
    """Run one script; a failing check in it fails the test with its message."""
    args = ["miltertest", "-s", str(SCRIPTS / script), "-D", f"DIR={SCRIPTS}",
            "-D", f"SOCKET={socket}", "-D", f"AUTHSERV={AUTHSERV}"]
    for name, value in defines.items():
        args += ["-D", f"{name}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"miltertest {script} {defines} failed:\n{output}"
    assert f"{script[:-4]}: ok" in result.stdout, output
    return output


def wire_reply(code: str, status: str, *lines: str) -> str:
    """A reply as libmilter's smfi_setmlreply puts it on the wire."""
    if len(lines) == 1:
        return f"{code} {status} {lines[0]}"
    return "\r\n".join(f"{code}{' ' if i == len(lines) - 1 else '-'}{status} {line}"
                       for i, line in enumerate(lines))


def expected_reply(milter: MilterDaemon, client_ip: str) -> str:
    """The reply the in-process milter gives for the same session and message."""
    evaluator = build_evaluator(load_config(str(milter.conf)))
    result = run_milter(evaluator, MESSAGE, client_ip=client_ip, mail_from="sender@example.net",
                        rcpts=("user@example.org",))
    return wire_reply(*result.reply)
