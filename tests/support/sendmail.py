"""A private Sendmail for the tests, delivering to smtp-sink.

Debian's sendmail-bin cannot be installed beside Postfix, so
scripts/install-sendmail.sh unpacks the real binary and the m4 files into
.venv/sendmail. This builds a sendmail.cf with m4 from a small test .mc plus
contrib/sendmail/mx6milter.mc verbatim (only the socket path moved), and runs
``sendmail -bD -C FILE`` in the foreground, listening on 127.0.0.1:PORT and
[::1]:PORT, relaying example.org to smtp-sink.

Sendmail sleeps 60 s at start when the host name has no dot and no
resolvable FQDN; it then runs in its own UTS namespace named
mx.example.org (unshare --uts) when it may, and takes the sleep otherwise.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from postfix import SmtpSink, free_dual_port
from servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".venv" / "sendmail"
SENDMAIL = PREFIX / "usr" / "libexec" / "sendmail" / "sendmail"
CF_DIR = PREFIX / "usr" / "share" / "sendmail" / "cf"
CONTRIB_MC = ROOT / "contrib" / "sendmail" / "mx6milter.mc"
CONTRIB_SOCKET = "local:/run/mx6milter/mx6milter.sock"


def available() -> bool:
    return SENDMAIL.is_file() and (CF_DIR / "m4" / "cf.m4").is_file() and bool(shutil.which("m4"))


def contrib_mc(socket_path: str) -> str:
    text = CONTRIB_MC.read_text()
    if text.count(CONTRIB_SOCKET) != 1:
        raise ValueError(f"contrib/sendmail/mx6milter.mc: {CONTRIB_SOCKET} not found once")
    return text.replace(CONTRIB_SOCKET, f"local:{socket_path}")


class PrivateSendmail:
    def __init__(self, milter_socket: str, port: int | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="mx6-sendmail-")).resolve()
        self.dir.chmod(0o755)
        self.port = port or free_dual_port()
        self.sink = SmtpSink(self.dir / "sink", free_dual_port())
        self.milter_socket = milter_socket
        self.process = None
        self.log = self.dir / "sendmail.out"

    def mc(self) -> str:
        d = self.dir
        return f"""divert(-1)
dnl Written by tests/sendmail.py: a private Sendmail on loopback.
divert(0)dnl
include(`{CF_DIR}/m4/cf.m4')dnl
VERSIONID(`mx6milter tests')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `mx.example.org')dnl
define(`QUEUE_DIR', `{d}/queue')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`confCW_FILE', `{d}/local-host-names')dnl
define(`confHELP_FILE', `{d}/helpfile')dnl
define(`ALIAS_FILE', `{d}/aliases')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
dnl The test sockets live under /tmp (sticky, world-writable).
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`confTO_IDENT', `0')dnl
define(`confDELIVERY_MODE', `background')dnl
define(`SMART_HOST', `[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {self.sink.port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {self.sink.port}')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`no_default_msa')dnl
RELAY_DOMAIN(`example.org')dnl
DAEMON_OPTIONS(`Port={self.port}, Addr=127.0.0.1, Name=MTA-v4')dnl
DAEMON_OPTIONS(`Port={self.port}, Addr=::1, Name=MTA-v6, Family=inet6')dnl
{contrib_mc(self.milter_socket)}MAILER(`smtp')dnl
"""

    def write_config(self) -> Path:
        d = self.dir
        (d / "queue").mkdir(mode=0o700, exist_ok=True)
        for name in ("local-host-names", "helpfile", "statistics"):
            (d / name).write_text("")
        (d / "aliases").write_text("postmaster: root\n")
        (d / "service.switch").write_text("hosts files\naliases files\n")
        (d / "sendmail.mc").write_text(self.mc())
        result = subprocess.run(["m4", str(d / "sendmail.mc")], capture_output=True, text=True)
        if result.returncode != 0 or "ERROR" in result.stderr:
            raise RuntimeError(f"m4 sendmail.mc failed:\n{result.stderr}")
        (d / "sendmail.cf").write_text(result.stdout)
        subprocess.run([str(PREFIX / "usr" / "libexec" / "sendmail" / "makemap"), "hash",
                        str(d / "aliases")], input="postmaster root\n", text=True,
                       capture_output=True)
        return d / "sendmail.cf"

    def command(self) -> list:
        run = [str(SENDMAIL), "-bD", "-C", str(self.dir / "sendmail.cf"), "-OLogLevel=0"]
        probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True)
        if probe.returncode == 0:
            # Its own host name with a dot: no 60 s "unqualified host name" sleep.
            return ["unshare", "--uts", "sh", "-c", 'hostname mx.example.org && exec "$0" "$@"', *run]
        return run

    def start(self) -> PrivateSendmail:
        self.write_config()
        self.sink.start()
        log = open(self.log, "wb")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                        start_new_session=True)
        log.close()
        try:
            wait_for(self._listening, timeout=90, what=f"sendmail on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"sendmail exited {self.process.returncode}: "
                               f"{self.log.read_text(errors='replace')}")
        for host in ("127.0.0.1", "::1"):
            try:
                with socket.create_connection((host, self.port), timeout=2) as sock:
                    if not sock.recv(200).startswith(b"220"):
                        return False
                    sock.sendall(b"QUIT\r\n")
            except OSError:
                return False
        return True

    def queue_files(self) -> list:
        return sorted(p.name for p in (self.dir / "queue").iterdir())

    def wait_until_idle(self, timeout: float = 60) -> None:
        wait_for(lambda: not self.queue_files(), timeout=timeout, interval=0.1,
                 what=f"Sendmail's queue to drain (left: {self.queue_files()})")

    def stop(self) -> None:
        """SIGTERM the daemon and its children (its process group); kill what is left."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self.sink.stop()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
