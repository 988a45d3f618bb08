"""A private Postfix instance for tests and the demo, delivering to smtp-sink.

    with PrivatePostfix(main_cf=MILTER_SETTINGS) as postfix:
        smtplib.SMTP("::1", postfix.port)...
        postfix.wait_until_idle()
        postfix.sink.messages()

``postfix -c DIR`` runs a complete Postfix (master, smtpd, cleanup, qmgr,
smtp) with its own config, queue and data directories, listening on
``[::1]:PORT`` and ``127.0.0.1:PORT`` only. Every message it accepts is
relayed to an ``smtp-sink`` on loopback that writes one file per
transaction, so tests can read back exactly what arrived. Its log goes to
``DIR/maillog`` (there is no syslog here).

smtpd runs chrooted into the queue directory, as Debian's master.cf has it,
so a milter socket at ``QUEUE/mx6milter/mx6milter.sock`` is reached as
``unix:mx6milter/mx6milter.sock``, the path contrib/postfix/main.cf uses.

Run as a script it starts or stops a long-lived instance (scripts/run.sh):
``python tests/support/postfix.py start --dir run/postfix --port 2525 --milter-conf FILE``.
"""
from __future__ import annotations

import argparse
import email.parser
import re
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).parent))
from servers import wait_for

# Postfix's own services (Debian's master.cf.dist, trimmed); smtpd listeners are added.
# {c}: the chroot column of the services Debian chroots (master_services).
_SERVICES = """\
pickup    unix  n       -       {c}     60      1       pickup
cleanup   unix  n       -       {c}     -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       {c}     -       -       trivial-rewrite
bounce    unix  -       -       {c}     -       0       bounce
defer     unix  -       -       {c}     -       0       bounce
trace     unix  -       -       {c}     -       0       bounce
verify    unix  -       -       {c}     -       1       verify
flush     unix  n       -       {c}     1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       {c}     -       -       smtp
relay     unix  -       -       {c}     -       -       smtp
showq     unix  n       -       {c}     -       -       showq
error     unix  -       -       {c}     -       -       error
retry     unix  -       -       {c}     -       -       error
discard   unix  -       -       {c}     -       -       discard
anvil     unix  -       -       {c}     -       1       anvil
scache    unix  -       -       {c}     -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def master_services(chroot: bool = True) -> str:
    """master.cf's lines for Postfix's own services: chrooted as Debian ships them, or
    none chrooted (a Postfix without a chroot tree: the bench's)."""
    return _SERVICES.format(c="y" if chroot else "n")


# One smtpd per address; {port} is filled in. Debian's default: chrooted.
DEFAULT_LISTENERS = """\
127.0.0.1:{port} inet  n       -       y       -       -       smtpd
[::1]:{port}     inet  n       -       y       -       -       smtpd
"""
LISTENER = re.compile(r"^\[?([0-9a-fA-F:.]+)\]?:(\d+)\s+inet\s", re.MULTILINE)
CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "postfix"


def contrib_master_cf(addresses: dict) -> str:
    """contrib/postfix/master.cf with its example addresses replaced.

    addresses maps each example listener (e.g. "[2001:db8::25]:smtp") to a
    real one ("[::1]:2526"); every example must be there, so the test breaks
    if contrib changes under it.
    """
    text = (CONTRIB / "master.cf").read_text()
    for example, real in addresses.items():
        if text.count(example) != 1:
            raise ValueError(f"contrib/postfix/master.cf: {example!r} not found exactly once")
        text = text.replace(example, real)
    return text


def free_dual_port() -> int:
    """A TCP port free on both 127.0.0.1 and ::1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as six:
            six.bind(("::1", 0))
            port = six.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as four:
                    four.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no TCP port free on both 127.0.0.1 and ::1")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout}{result.stderr}")
    return result


@dataclass
class SinkMessage:
    """One transaction as smtp-sink dumped it: envelope plus the message."""
    path: Path
    client_addr: str
    mail_from: str
    rcpts: list
    raw: bytes       # the message as relayed by Postfix, CRLF line ends

    @property
    def head(self) -> str:
        """The header block, unfolded lines kept as sent."""
        return self.raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")

    def header_lines(self) -> list:
        """Each header field as one string "Name: value", folded lines joined with \\n."""
        fields = []
        for line in self.head.split("\n"):
            if line[:1] in (" ", "\t") and fields:
                fields[-1] += "\n" + line
            elif line:
                fields.append(line)
        return fields

    @property
    def message_id(self) -> str:
        for field in self.header_lines():
            if field.lower().startswith("message-id:"):
                return field.split(":", 1)[1].strip()
        return ""

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\n\n", 1)[1] if b"\n\n" in self.raw else b""

    @property
    def message(self):
        return email.parser.BytesParser(policy=email.policy.default).parsebytes(self.raw)

    def header(self, name: str) -> list:
        return [str(v) for v in (self.message.get_all(name) or [])]


class SmtpSink:
    """smtp-sink on 127.0.0.1: the final hop; one file per mail transaction."""

    def __init__(self, directory: Path, port: int):
        self.dir = directory
        self.port = port
        self.process = None

    def start(self, detach: bool = False) -> SmtpSink:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir, "postfix")
        # -u: drop root after binding; -d: one dump file per transaction.
        self.process = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-h", "sink.example.org",
             "-d", f"{self.dir}/%Y%m%d%H%M%S.", f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=detach)
        wait_for(self._answers, what=f"smtp-sink on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"smtp-sink exited with status {self.process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def messages(self) -> list:
        return [parse_dump(path) for path in sorted(self.dir.iterdir()) if path.is_file()]


ENVELOPE_LINES = (b"X-Client-Addr", b"X-Client-Proto", b"X-Helo-Args", b"X-Mail-Args",
                  b"X-Rcpt-Args")


def parse_dump(path: Path) -> SinkMessage:
    """smtp-sink's dump: envelope lines (X-Client-Addr, X-Mail-Args, X-Rcpt-Args...), then the message."""
    lines = path.read_bytes().split(b"\n")
    client, mail_from, rcpts = "", "", []
    index = 0
    for index, line in enumerate(lines):
        name, _, value = line.rstrip(b"\r").partition(b": ")
        if name not in ENVELOPE_LINES:
            break
        words = value.decode().split()
        if name == b"X-Client-Addr":
            client = value.decode()
        elif name == b"X-Mail-Args":
            mail_from = words[0].strip("<>") if words else ""
        elif name == b"X-Rcpt-Args":
            rcpts.append(words[0].strip("<>"))
    return SinkMessage(path, client, mail_from, rcpts, b"\n".join(lines[index:]))


class PrivatePostfix:
    """A private ``postfix -c DIR`` instance; ``stop()`` ends every process it started."""

    def __init__(self, main_cf: str = "", listeners: str = DEFAULT_LISTENERS,
                 directory: str | Path | None = None, port: int | None = None):
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="mx6-postfix-"))
        self.dir = self.dir.resolve()
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "queue"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "maillog"
        self.port = port or free_dual_port()
        self.sink = SmtpSink(self.dir / "sink", free_dual_port())
        self.main_cf_extra = main_cf
        self.listeners = listeners
        self.started = False

    # --- configuration

    def main_cf(self) -> str:
        """The defaults below with main_cf's lines, each key once (the last value wins).

        An overridden key makes every Postfix program log a warning through
        postlogd as it starts; a few of them fill postlogd's datagram queue
        (net.unix.max_dgram_qlen, 10 by default) while postlogd itself is
        logging into it, and the instance hangs.
        """
        settings: dict = {}
        key = ""
        for line in self._main_cf_lines().splitlines():
            if line.startswith((" ", "\t")) and key and line.strip():
                settings[key] += "\n" + line          # a continuation line
            elif "=" in line and not line.startswith("#"):
                key = line.partition("=")[0].strip()
                settings.pop(key, None)
                settings[key] = line
        return "# Written by tests/support/postfix.py: a private instance on loopback.\n" + \
            "\n".join(settings.values()) + "\n"

    def _main_cf_lines(self) -> str:
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
myhostname = mx.example.org
mydomain = example.org
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1, [::1]
inet_protocols = all
mynetworks = 127.0.0.0/8
relay_domains = example.org
default_transport = smtp:[127.0.0.1]:{self.sink.port}
relay_transport = smtp:[127.0.0.1]:{self.sink.port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
local_header_rewrite_clients =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
message_size_limit = 31457280
maillog_file = {self.log_file}
maillog_file_prefixes = {self.dir}
# Retry soon: a test that restores the milter expects deferred mail to move.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
{self.main_cf_extra}
"""

    def master_cf(self) -> str:
        return master_services() + self.listeners.replace("{port}", str(self.port))

    def write_config(self) -> None:
        for path in (self.config_dir, self.queue_dir, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)     # mkdtemp's 0700 would keep the postfix user out
        # The instance runs its own queue: the queue and data dirs belong to postfix.
        shutil.chown(self.data_dir, "postfix")
        (self.config_dir / "main.cf").write_text(self.main_cf())
        (self.config_dir / "master.cf").write_text(self.master_cf())

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("postfix", "-c", str(self.config_dir), *args, check=check)

    def postconf(self, *args: str) -> str:
        return _run("postconf", "-c", str(self.config_dir), *args).stdout

    # --- life cycle

    def start(self, detach: bool = False) -> PrivatePostfix:
        self.write_config()
        self.sink.start(detach=detach)
        self.started = True
        try:
            self.postfix("check")
            self.postfix("start")
            wait_for(self._listening, timeout=20, what=f"Postfix on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def listen_addresses(self) -> list:
        """(host, port) of every smtpd listener in master.cf."""
        return [(host, int(port)) for host, port in LISTENER.findall(self.master_cf())]

    def _listening(self) -> bool:
        for host, port in self.listen_addresses():
            try:
                with socket.create_connection((host, port), timeout=2) as sock:
                    sock.recv(100)
                    sock.sendall(b"QUIT\r\n")
            except OSError:
                return False
        return True

    def master_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "master.lock").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is None:
            try:
                pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        """Stop Postfix and the sink; make sure no master process is left."""
        if self.started:
            pid = self.master_pid()
            self.postfix("stop", check=False)
            if pid is not None:
                try:
                    wait_for(lambda: not _alive(pid), timeout=15, what="Postfix master to exit")
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
            self.started = False
        self.sink.stop()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- observing

    def queue_ids(self) -> list:
        """Queue files still in the instance's queue (incoming, active, deferred, hold)."""
        ids = []
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            root = self.queue_dir / sub
            if root.is_dir():
                ids += [name for _, _, files in os.walk(root) for name in files]
        return ids

    def wait_until_idle(self, timeout: float = 60) -> None:
        """Until the queue is empty: everything accepted has reached the sink."""
        wait_for(lambda: not self.queue_ids(), timeout=timeout, interval=0.1,
                 what=f"Postfix queue to drain (left: {self.queue_ids()})")

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv=None) -> int:
    """start/stop a long-lived instance: the demo of scripts/run.sh."""
    parser = argparse.ArgumentParser(description="Start or stop a private Postfix instance "
                                     "on [::1]:PORT and 127.0.0.1:PORT, delivering to smtp-sink.")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", required=True, help="its directory (config, queue, sink, log)")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--main-cf", default="", help="a file of extra main.cf lines")
    parser.add_argument("--no-chroot", action="store_true",
                        help="smtpd not chrooted, so it reaches a milter socket in /run")
    args = parser.parse_args(argv)
    extra = Path(args.main_cf).read_text() if args.main_cf else ""
    listeners = DEFAULT_LISTENERS
    if args.no_chroot:
        listeners = re.sub(r"^(\S+\s+inet\s+n\s+-\s+)y", r"\1n", listeners, flags=re.MULTILINE)
    instance = PrivatePostfix(main_cf=extra, listeners=listeners, directory=args.dir,
                              port=args.port)
    sink_pid = instance.dir / "sink.pid"
    if args.action == "start":
        instance.start(detach=True)
        sink_pid.write_text(f"{instance.sink.process.pid}\n")
        print(f"Postfix listening on [::1]:{instance.port} and 127.0.0.1:{instance.port}; "
              f"what it accepts goes to {instance.sink.dir}/, its log to {instance.log_file}")
        return 0
    instance.started = True
    instance.stop()
    try:
        os.kill(int(sink_pid.read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    sink_pid.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
