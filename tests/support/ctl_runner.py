"""Run mx6ctl against the test Redis: in-process (fast) or as a real process."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import _merge

from mx6milter import ctl


@dataclass
class Run:
    rc: int
    out: str
    err: str


class Ctl:
    """mx6ctl with a config file of its own: [redis] url, [dns] nameservers, extras."""

    def __init__(self, directory: Path, redis_url: str, nameservers: str = "127.0.0.1:9",
                 extra: str = ""):
        self.directory = directory
        self.config = directory / "mx6ctl-test.conf"
        base = (f"[redis]\nurl = {redis_url}\n[dns]\nnameservers = {nameservers}\n"
                "timeout = 1\nbudget = 3\n")
        self.config.write_text(_merge(base, extra))

    def __call__(self, *argv: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = ctl.main(["-c", str(self.config), *map(str, argv)])
        return Run(rc, out.getvalue(), err.getvalue())

    def process(self, *argv: str, input: bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
        """The real command line, to see exactly what an operator sees (tracebacks too)."""
        return subprocess.run([sys.executable, "-m", "mx6milter.ctl", "-c", str(self.config),
                               *map(str, argv)], input=input, capture_output=True, timeout=60,
                              **kwargs)

    def file(self, name: str, content) -> Path:
        path = self.directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path
