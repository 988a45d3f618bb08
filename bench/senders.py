"""The sender matrix: what real MTAs do after mx6milter's fallback reply.

    .venv/bin/python -m bench.senders [--senders postfix,exim,...] [--layouts b,e] [--json FILE]

The defensive strategy assumes that a sender meeting 4xx on an IPv6 MX moves on
to the next MX and so reaches an IPv4 one. This measures it. Everything runs in
a private network namespace (its own loopback, its own port 25 and 53, its own
/etc/resolv.conf through ``ip netns exec``), so real MTAs resolve MX records
from our BIND exactly as they would on the Internet, and nothing outside the
namespace is touched:

* DNS: BIND on 127.0.0.1:53 serving one domain per receiving layout (``LAYOUTS``);
* receiver: one private Postfix with four listeners on port 25: two IPv6 ones
  behind mx6milter in defensive mode (451 at end of data), one IPv6 one behind
  mx6milter in mx6 mode (550 5.5.7 "fall back to IPv4"), one IPv4 one with no
  milter; every accepted message goes to its smtp-sink;
* senders (``SENDERS``): Postfix's smtp client, Exim 4, Sendmail, OpenSMTPD
  and ``mx6ctl send`` (plain and MX6-aware), each sending from 127.0.16.10 and
  2001:db8:16::10 (``opensmtpd-default`` from whatever the kernel picks), with
  the retry interval set to ``--retry`` seconds (OpenSMTPD's schedule is built
  in; mx6ctl send makes one attempt). Exim and OpenSMTPD are unpacked by
  scripts/install-senders.sh, Sendmail by scripts/install-sendmail.sh.

However the run ends (done, SIGTERM, Ctrl-C), every process it started is
stopped and the namespace deleted.

For each sender and layout one message is sent; the cell records whether it
arrived, over which family and listener, after how many connections, in how
many seconds, whether in the first delivery attempt (before the sender's first
retry came round), and the sender's and receiver's log lines. A cell waits until
the sender's second retry and some (``default_window``), or ``--cell-timeout``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mx6milter import __version__

from .procs import PYTHON, ROOT, DnsServer, RedisServer, free_port, wait_for

sys.path.insert(0, str(ROOT / "tests" / "support"))
from milterd import MX6CTL, MilterDaemon
from postfix import DEFAULT_LISTENERS, PrivatePostfix

NETNS_ENV = "MX6_SENDERS_NETNS"
SENDERS_DIR = ROOT / ".venv" / "senders"          # scripts/install-senders.sh unpacks here
EXIM = SENDERS_DIR / "usr" / "sbin" / "exim4"
SMTPD = SENDERS_DIR / "usr" / "sbin" / "smtpd"
SENDMAIL_PREFIX = ROOT / ".venv" / "sendmail"     # scripts/install-sendmail.sh unpacks here
SENDMAIL = SENDMAIL_PREFIX / "usr" / "libexec" / "sendmail" / "sendmail"
SENDMAIL_CF_DIR = SENDMAIL_PREFIX / "usr" / "share" / "sendmail" / "cf"

S4, S6 = "127.0.16.10", "2001:db8:16::10"           # the sending host
R6A, R6B, R6M = "2001:db8:16::25", "2001:db8:16::26", "2001:db8:16::27"
R4 = "192.0.2.25"         # TEST-NET-1 on lo: OpenSMTPD ignores MX hosts on 127/8
LISTENERS = {R6A: ("r6a", "defensive"), R6B: ("r6b", "defensive"), R6M: ("r6m", "mx6"),
             R4: ("r4", None)}
# A sender's client addresses: S4 and S6, or, where the kernel picks the source (no bind),
# the MX's own address on this shared loopback. Nothing else connects to the listeners.
CLIENTS = (S4, S6, *LISTENERS)

RECEIVER_HOSTS = f"""\
mx46    IN AAAA {R6A}
mx46    IN A    {R4}
mx6a    IN AAAA {R6A}
mx6b    IN AAAA {R6B}
mx4     IN A    {R4}
mx6e    IN AAAA {R6M}
mx6e    IN A    {R4}
"""

# The receiving layouts of the issue, one domain each.
LAYOUTS = {
    "a": ("one MX name with AAAA and A", "@ IN MX 10 mx46.rcv.example."),
    "b": ("IPv6-only MX at 10, IPv4-only MX at 20",
          "@ IN MX 10 mx6a.rcv.example.\n@ IN MX 20 mx4.rcv.example."),
    "c": ("IPv4-only MX at 10, IPv6-only MX at 20",
          "@ IN MX 10 mx4.rcv.example.\n@ IN MX 20 mx6a.rcv.example."),
    "d": ("two IPv6-only MX (10, 20) before the IPv4 one (30)",
          "@ IN MX 10 mx6a.rcv.example.\n@ IN MX 20 mx6b.rcv.example.\n"
          "@ IN MX 30 mx4.rcv.example."),
    "e": ("MX6: SRV _mx6._tcp to a dual-stack host in mx6 mode, A-only MX for the rest",
          "_mx6._tcp IN SRV 10 0 25 mx6e.rcv.example.\n@ IN MX 10 mx4.rcv.example."),
}

SOA = "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN NS ns\nns IN A 127.0.0.1\n"


def zones() -> dict:
    result = {f"layout-{name}.example": SOA + records + "\n" for name, (_, records) in LAYOUTS.items()}
    result["rcv.example"] = SOA + RECEIVER_HOSTS
    # SPF covers the sender's IPv4 address only: its IPv6 mail has no evidence and falls back.
    result["sender.example"] = SOA + f'@ IN TXT "v=spf1 ip4:{S4} -all"\nmail IN A {S4}\n' \
        f"mail IN AAAA {S6}\n"
    return result


class Port53Dns(DnsServer):
    """The test BIND, on port 53 of the namespace's loopback: what resolv.conf names."""

    def __init__(self, extra_zones: dict, work: Path):
        empty = work / "no-zone-templates"
        empty.mkdir()
        super().__init__(extra_zones=extra_zones, template_dir=empty)
        self.port = 53


# --- the receiver ---------------------------------------------------------------------------


class Receiver:
    """One private Postfix with the four port-25 listeners, and its two milters."""

    def __init__(self, redis_url: str, work: Path):
        listeners = DEFAULT_LISTENERS
        for address, (name, mode) in LISTENERS.items():
            where = f"[{address}]:25" if ":" in address else f"{address}:25"
            listeners += (f"{where} inet n - y - - smtpd -o myhostname={name}.rcv.example "
                          f"-o syslog_name=postfix/{name}")
            if mode:
                listeners += f" -o smtpd_milters=unix:mx6milter/{mode}.sock"
            listeners += "\n"
        domains = " ".join(f"layout-{name}.example" for name in LAYOUTS)
        self.postfix = PrivatePostfix(
            main_cf=f"relay_domains = {domains}\nmilter_default_action = tempfail\n"
                    f"smtpd_client_restrictions =\nsmtpd_relay_restrictions = "
                    f"permit_mynetworks, reject_unauth_destination\n",
            listeners=listeners, directory=work / "receiver")
        self.milters = []
        for mode in ("defensive", "mx6"):
            sock = self.postfix.queue_dir / "mx6milter" / f"{mode}.sock"
            self.milters.append(MilterDaemon(
                work / f"milter-{mode}", f"unix:{sock}", redis_url, nameservers="127.0.0.1:53",
                extra=f"[policy]\nmode = {mode}\nauthserv_id = {mode}.rcv.example\n"
                      "[milter]\nsocket_mode = 0666\n[dns]\ntimeout = 1\nbudget = 3\n"))

    def start(self) -> Receiver:
        for milter in self.milters:
            milter.start()
        self.postfix.start()
        return self

    def close(self) -> None:
        self.postfix.stop()
        for milter in self.milters:
            milter.stop()


# --- the senders ----------------------------------------------------------------------------


@dataclass
class Submission:
    """What a sender said when it was handed the message."""
    bounced: bool = False
    finished: bool = False       # the sender will not try again (mx6ctl send: one attempt)
    exit_code: int | None = None
    output: str = ""


class PostfixSender:
    name = "postfix"

    def __init__(self, work: Path, retry: int):
        self.postfix = _SendingPostfix(retry, work / "sender-postfix")
        self.retries = (retry, 2 * retry)

    def version(self) -> str:
        return "Postfix " + subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                                           text=True).stdout.strip()

    def start(self) -> None:
        self.postfix.start()

    def submit(self, message: bytes, rcpt: str) -> Submission:
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=30) as client:
            client.sendmail("s@sender.example", [rcpt], message)
        return Submission()

    def log(self) -> str:
        return self.postfix.log()

    def bounced(self, log: str) -> bool:
        return "status=bounced" in log

    def clear(self) -> None:
        # Deleted, not flushed: a flush would try it once more, into the next cell.
        subprocess.run(["postsuper", "-c", str(self.postfix.config_dir), "-d", "ALL"],
                       capture_output=True)

    def stop(self) -> None:
        self.postfix.close()


class _SendingPostfix(PrivatePostfix):
    """A private Postfix whose smtp client delivers by MX from the namespace's DNS."""

    def __init__(self, retry: int, directory: Path):
        super().__init__(directory=directory, main_cf=f"""\
myhostname = mail.sender.example
relay_domains =
default_transport = smtp
relay_transport = smtp
smtp_dns_support_level = enabled
smtp_bind_address = {S4}
smtp_bind_address6 = {S6}
smtp_tls_security_level = none
queue_run_delay = {retry}s
minimal_backoff_time = {retry}s
maximal_backoff_time = {retry}s
""")

    def master_cf(self) -> str:
        # Not chrooted: the client needs /etc/services and /etc/resolv.conf.
        return re.sub(r"^smtp(\s+unix\s+-\s+-\s+)y", r"smtp\1n", super().master_cf(),
                      flags=re.MULTILINE)


class EximSender:
    name = "exim"

    def __init__(self, work: Path, retry: int):
        self.dir = work / "sender-exim"
        self.retry = retry
        self.retries = (retry, 2 * retry)
        self.conf = self.dir / "exim.conf"
        self.pid_file = self.dir / "exim.pid"

    def version(self) -> str:
        out = subprocess.run([str(EXIM), "-C", str(self.conf), "-bV"], capture_output=True,
                             text=True).stdout
        return out.splitlines()[0].split(" #")[0] if out else "Exim (unknown)"

    def start(self) -> None:
        for sub in ("spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir / "spool", "Debian-exim")
        shutil.chown(self.dir / "log", "Debian-exim")
        self.conf.write_text(f"""\
primary_hostname = mail.sender.example
exim_path = {EXIM}
keep_environment =
# Only the sending addresses are this host's: the receivers share the namespace's loopback.
local_interfaces = <; {S4} ; {S6}
spool_directory = {self.dir}/spool
log_file_path = {self.dir}/log/%slog
pid_file_path = {self.pid_file}
exim_user = Debian-exim
exim_group = Debian-exim
trusted_users = root
host_lookup =
rfc1413_hosts =
begin routers
dnslookup:
  driver = dnslookup
  transport = remote_smtp
  no_more
begin transports
remote_smtp:
  driver = smtp
  interface = <; {S4} ; {S6}
  helo_data = mail.sender.example
begin retry
*   *   F,1h,{self.retry}s
""")
        # A queue runner every `retry` seconds, as a real Exim's -q30m does.
        # It detaches itself; the pid file names the daemon to stop.
        subprocess.run([str(EXIM), "-C", str(self.conf), f"-q{self.retry}s", "-oP", str(self.pid_file)],
                       check=True, capture_output=True, timeout=30)
        wait_for(self.pid_file.exists, timeout=10, what="Exim's queue-runner daemon")

    def submit(self, message: bytes, rcpt: str) -> Submission:
        result = subprocess.run([str(EXIM), "-C", str(self.conf), "-odb", "-f", "s@sender.example",
                                 rcpt], input=message, capture_output=True, timeout=60)
        return Submission(exit_code=result.returncode, output=result.stderr.decode(errors="replace"))

    def log(self) -> str:
        path = self.dir / "log" / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def bounced(self, log: str) -> bool:
        return re.search(r" \*\* ", log) is not None

    def clear(self) -> None:
        ids = subprocess.run([str(EXIM), "-C", str(self.conf), "-bpr"], capture_output=True,
                             text=True).stdout
        queued = re.findall(r"\b([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\b", ids)
        if queued:
            subprocess.run([str(EXIM), "-C", str(self.conf), "-Mrm", *queued], capture_output=True)

    def stop(self) -> None:
        try:
            os.kill(int(self.pid_file.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass


class SendmailSender:
    """Sendmail 8 routing by MX through the namespace's resolver, its client bound to S4/S6.

    Sendmail logs only to syslog, which this machine has not: the transcript of
    each delivery attempt is its ``-v`` output instead. The message is handed
    over with ``-odi -v`` (the first attempt runs while we wait); the queue is
    then run with ``-q -v`` every ``retry`` seconds, as the daemon's ``-q``
    interval would.
    """
    name = "sendmail"

    def __init__(self, work: Path, retry: int):
        self.dir = work / "sender-sendmail"
        self.retry = retry
        self.retries = (retry, 2 * retry)
        self.cf = self.dir / "sendmail.cf"
        self.transcript = self.dir / "transcript"
        self.runner: subprocess.Popen | None = None

    def version(self) -> str:
        out = subprocess.run([str(SENDMAIL), "-d0.1", "-bt", "-C", str(self.cf)], input="",
                             capture_output=True, text=True).stdout
        return out.splitlines()[0].replace("Version", "Sendmail") if out else "Sendmail (unknown)"

    def mc(self) -> str:
        d = self.dir
        return f"""divert(-1)
divert(0)dnl
include(`{SENDMAIL_CF_DIR}/m4/cf.m4')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `mail.sender.example')dnl
define(`QUEUE_DIR', `{d}/queue')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`confCW_FILE', `{d}/local-host-names')dnl
define(`confHELP_FILE', `{d}/helpfile')dnl
define(`ALIAS_FILE', `{d}/aliases')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0')dnl
define(`confMIN_QUEUE_AGE', `0')dnl
dnl A shared test machine's load average must not make it queue instead of deliver.
define(`confQUEUE_LA', `1000')dnl
define(`confREFUSE_LA', `1000')dnl
FEATURE(`nocanonify')dnl
FEATURE(`no_default_msa')dnl
CLIENT_OPTIONS(`Family=inet, Addr={S4}')dnl
CLIENT_OPTIONS(`Family=inet6, Addr={S6}')dnl
DAEMON_OPTIONS(`Port=smtp, Addr=127.0.0.1, Name=MTA')dnl
MAILER(`smtp')dnl
"""

    def sendmail(self, *args: str) -> list:
        # Its own host name with a dot, or it waits 60 s to resolve an unqualified one.
        return ["unshare", "--uts", "sh", "-c", 'hostname mail.sender.example && exec "$0" "$@"',
                str(SENDMAIL), "-C", str(self.cf), "-OLogLevel=0", *args]

    def start(self) -> None:
        (self.dir / "queue").mkdir(parents=True, mode=0o700)
        for name in ("local-host-names", "helpfile", "statistics", "aliases"):
            (self.dir / name).write_text("")
        (self.dir / "service.switch").write_text("hosts dns files\naliases files\n")
        (self.dir / "sendmail.mc").write_text(self.mc())
        self.cf.write_text(subprocess.run(["m4", str(self.dir / "sendmail.mc")], check=True,
                                          capture_output=True, text=True).stdout)
        run = " ".join(shlex.quote(arg) for arg in self.sendmail("-q", "-v"))
        self.runner = subprocess.Popen(
            ["sh", "-c", f"while sleep {self.retry}; do date -u '+%F %T queue run'; {run}; done"],
            stdout=self.transcript.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def submit(self, message: bytes, rcpt: str) -> Submission:
        result = subprocess.run(self.sendmail("-odi", "-v", "-f", "s@sender.example", rcpt),
                                input=message, capture_output=True, timeout=300)
        with self.transcript.open("ab") as log:
            log.write(result.stdout + result.stderr)
        return Submission(exit_code=result.returncode)

    def log(self) -> str:
        return self.transcript.read_text(errors="replace") if self.transcript.exists() else ""

    def bounced(self, log: str) -> bool:
        return "Service unavailable" in log or "User unknown" in log

    def clear(self) -> None:
        for path in (self.dir / "queue").iterdir():
            path.unlink()

    def stop(self) -> None:
        if self.runner and self.runner.poll() is None:
            os.killpg(self.runner.pid, signal.SIGTERM)
            self.runner.wait(timeout=10)


IDLE_TICK = re.compile(r"hanging on for \d+s|timeout for session hangon|no task for relay")


class OpenSmtpdSender:
    """OpenSMTPD relaying by MX, its log its -v output.

    ``opensmtpd`` relays with ``src <srcs>``, a table of S4 and S6: each
    delivery attempt takes the table's next address, in turn (lka's
    table_fetch), and reaches only the MX hosts of that family ("AF mismatch"
    for the others). ``opensmtpd-default`` has no ``src``, as installed: the
    kernel picks the source, which on this shared loopback is the MX's own
    address, and every MX host is reachable.

    Its spool is compiled in (/var/spool/smtpd): it runs under ``unshare -m``
    with a private directory mounted on /var/spool. Its retry schedule is its
    own (not configurable); ``--retry`` does not change it: a deferred envelope
    is retried 400 x n^2 s after it was queued (scheduler_ramqueue.c's
    BACKOFF_TRANSFER), i.e. at 400 s, 1600 s, 3600 s... It drops an MX
    whose address is a loopback one: hence R4 is 192.0.2.25 (on lo, but not
    in 127/8).
    """
    def __init__(self, work: Path, retry: int, source_table: bool):
        self.name = "opensmtpd" if source_table else "opensmtpd-default"
        self.source = " src <srcs>" if source_table else ""
        self.dir = work / f"sender-{self.name}"
        self.conf = self.dir / "smtpd.conf"
        self.log_path = self.dir / "smtpd.log"
        self.retries = (400, 1600)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def version(self) -> str:
        out = subprocess.run([str(SMTPD), "-h"], capture_output=True, text=True)
        match = re.search(r"version:\s*(?:OpenSMTPD\s+)?(\S+)", out.stdout + out.stderr)
        return f"OpenSMTPD {match.group(1)}" if match else "OpenSMTPD"

    def start(self) -> None:
        spool, lib, run = self.dir / "spool", self.dir / "lib", self.dir / "run"
        (spool / "smtpd").mkdir(parents=True)
        (spool / "smtpd").chmod(0o711)
        (lib / "opensmtpd" / "empty").mkdir(parents=True)
        run.mkdir()
        for path in (self.dir, spool, lib, lib / "opensmtpd"):
            path.chmod(0o755)
        self.conf.write_text(f"""\
table srcs {{ {S4}, {S6} }}
listen on 127.0.0.1 port {self.port}
action "out" relay{self.source} helo mail.sender.example
match from local for any action "out"
""")
        self.process = subprocess.Popen(self._in_own_mounts(f"exec {SMTPD} -d -v -f {self.conf}"),
                                        stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(self._answers, timeout=20, what="OpenSMTPD")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"OpenSMTPD exited: {self.log()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def submit(self, message: bytes, rcpt: str) -> Submission:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail("s@sender.example", [rcpt], message)
        return Submission()

    def log(self) -> str:
        """Its -v output, less the idle ticks of a session hanging on after its last task
        (some 40 lines an attempt, which would crowd the attempts out of the cell's log)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "".join(line for line in text.splitlines(keepends=True) if not IDLE_TICK.search(line))

    def bounced(self, log: str) -> bool:
        return "result=PermFail" in log

    def _in_own_mounts(self, command: str) -> list:
        """COMMAND where its compiled-in directories are ours: the spool, the chroot
        (/var/lib/opensmtpd/empty) and the control socket's /run."""
        d = self.dir
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f"mount --bind {d / 'spool'} /var/spool && mount --bind {d / 'lib'} /var/lib && "
                f"mount --bind {d / 'run'} /run && {command}"]

    def clear(self) -> None:
        smtpctl = SENDERS_DIR / "usr" / "sbin" / "smtpctl"
        subprocess.run(self._in_own_mounts(f"exec {smtpctl} remove all"), capture_output=True,
                       timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Mx6ctlSender:
    """``mx6ctl send``: one delivery attempt, no queue; aware follows SRV and the 550."""

    def __init__(self, work: Path, retry: int, aware: bool):
        self.name = "mx6ctl-aware" if aware else "mx6ctl-plain"
        self.aware = aware
        self.dir = work / f"sender-{self.name}"
        self.retries = (retry, 2 * retry)      # never due: the cell ends with the one attempt
        self.transcripts: list = []

    def version(self) -> str:
        return f"mx6ctl send {__version__}" + ("" if self.aware else " --unaware")

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def submit(self, message: bytes, rcpt: str) -> Submission:
        path = self.dir / "message.eml"
        path.write_bytes(message)
        argv = [MX6CTL, "send", "--json", "--nameserver", "127.0.0.1:53", "--helo",
                "mail.sender.example", "--from", "s@sender.example", "--to", rcpt,
                "--source-ipv4", S4, "--source-ipv6", S6, "--timeout", "30", str(path)]
        if not self.aware:
            argv.insert(argv.index("send") + 1, "--unaware")
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        lines = []
        try:
            for event in json.loads(result.stdout).get("transcript", []):
                lines.append(f"{event.get('kind')}: {event.get('text') or event.get('address', '')}")
        except ValueError:
            lines.append(result.stdout)
        self.transcripts.append("\n".join(lines + [result.stderr]))
        return Submission(finished=True, bounced=result.returncode == 69,
                          exit_code=result.returncode, output="\n".join(lines[-12:]))

    def log(self) -> str:
        return "\n".join(self.transcripts)

    def bounced(self, log: str) -> bool:
        return False

    def clear(self) -> None:
        pass

    def stop(self) -> None:
        pass


SENDERS = {
    "postfix": PostfixSender,
    "exim": EximSender,
    "sendmail": SendmailSender,
    "opensmtpd": lambda work, retry: OpenSmtpdSender(work, retry, source_table=True),
    "opensmtpd-default": lambda work, retry: OpenSmtpdSender(work, retry, source_table=False),
    "mx6ctl-plain": lambda work, retry: Mx6ctlSender(work, retry, aware=False),
    "mx6ctl-aware": lambda work, retry: Mx6ctlSender(work, retry, aware=True),
}


# --- one cell -------------------------------------------------------------------------------


@dataclass
class Cell:
    sender: str
    layout: str
    arrived: bool = False
    family: int | None = None            # 4 or 6: how the message finally arrived
    listener: str = ""                   # r6a, r6b, r6m or r4
    seconds: float | None = None
    first_attempt: bool | None = None    # arrived before the sender's first retry came round
    connections: dict = field(default_factory=dict)     # listener -> connections from the sender
    replies: list = field(default_factory=list)          # what the milters answered
    bounced: bool = False
    sender_log: list = field(default_factory=list)
    note: str = ""

    def summary(self) -> str:
        path = "->".join(f"{name}x{count}" if count > 1 else name
                         for name, count in self.connections.items())
        if not self.arrived:
            return f"{'bounced' if self.bounced else 'NOT DELIVERED'} ({path or 'no connection'})"
        when = "1st attempt" if self.first_attempt else "after retry"
        return f"IPv{self.family}, {when}, {self.seconds:.0f} s ({path})"


CONNECT = re.compile(r"postfix/(r6a|r6b|r6m|r4)/smtpd\[\d+\]: connect from \S+\[([^\]]+)\]")
MILTER_REPLY = re.compile(r"cleanup\[\d+\]: \w+: milter-(reject|tempfail|discard)\S*: END-OF-MESSAGE from "
                          r"\S*?\[([^\]]+)\]: (\d\.\d{1,3}\.\d{1,3}) (.*?); from=")


def default_window(sender) -> float:
    """Seconds a cell waits for the message: up to the sender's second retry and some.

    ``sender.retries`` says when its first two retries are due, in seconds
    after it queued the message: every ``--retry`` seconds for the senders we
    configure, OpenSMTPD's own schedule for it.
    """
    first, second = sender.retries
    return second + first / 2 + 20


def run_cell(sender, layout: str, receiver: Receiver, timeout: float) -> Cell:
    cell = Cell(sender.name, layout)
    token = uuid.uuid4().hex[:12]
    message_id = f"<{token}@sender.example>"
    rcpt = f"user@layout-{layout}.example"
    message = (f"From: Sender <s@sender.example>\r\nTo: {rcpt}\r\nSubject: matrix {sender.name} {layout}"
               f"\r\nMessage-ID: {message_id}\r\nDate: {email_date()}\r\n\r\nHello.\r\n").encode()
    receiver_log_start = len(receiver.postfix.log())
    sender_log_start = len(sender.log())
    started = time.monotonic()
    submission = sender.submit(message, rcpt)
    arrival = None
    while time.monotonic() - started < timeout:
        arrival = next((m for m in receiver.postfix.sink.messages() if m.message_id == message_id), None)
        if arrival or submission.finished or submission.bounced:
            break
        if sender.bounced(sender.log()[sender_log_start:]):
            cell.bounced = True
            break
        time.sleep(0.2)
    if submission.finished and arrival is None:
        receiver.postfix.wait_until_idle(timeout=30)
        arrival = next((m for m in receiver.postfix.sink.messages() if m.message_id == message_id), None)
    elapsed = time.monotonic() - started
    cell.bounced = cell.bounced or submission.bounced
    receiver_log = receiver.postfix.log()[receiver_log_start:]
    for name, client in CONNECT.findall(receiver_log):
        if client in CLIENTS:
            cell.connections[name] = cell.connections.get(name, 0) + 1
    cell.replies = [f"{action} {code} {text}" for action, client, code, text
                    in MILTER_REPLY.findall(receiver_log) if client in CLIENTS]
    cell.sender_log = [line for line in sender.log()[sender_log_start:].splitlines() if line][-200:]
    if arrival is not None:
        cell.arrived = True
        cell.seconds = round(elapsed, 1)
        received = " ".join(" ".join(h.split()) for h in arrival.header("Received")
                            if "rcv.example" in h)
        match = re.search(r"by (r6a|r6b|r6m|r4)\.rcv\.example", received)
        cell.listener = match.group(1) if match else ""
        cell.family = 6 if "[IPv6:" in received.split(" by ")[0] else 4
        cell.first_attempt = elapsed < sender.retries[0] * 0.9
    elif not cell.bounced:
        cell.note = f"nothing arrived within {timeout:.0f} s"
    sender.clear()
    return cell


def email_date() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


# --- the namespace --------------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def run_in_namespace(argv: list) -> int:
    """Re-run this command inside a fresh network namespace whose resolv.conf is our BIND.

    However the run ends (done, SIGTERM, Ctrl-C), every process left in the
    namespace is stopped and the namespace deleted.
    """
    name = f"mx6senders{os.getpid()}"
    etc = Path("/etc/netns") / name
    child = None
    stopping = None

    def forward(signum, frame):
        nonlocal stopping
        stopping = stopping or time.monotonic()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {number: signal.signal(number, forward) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        _ip("netns", "add", name)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        env = dict(os.environ, **{NETNS_ENV: name})
        child = subprocess.Popen(["ip", "netns", "exec", name, PYTHON, "-m", "bench.senders", *argv],
                                 cwd=ROOT, env=env)
        while child.poll() is None and (stopping is None or time.monotonic() < stopping + 60):
            time.sleep(0.2)       # after a signal, a minute for its own clean-up
        return child.returncode if child.returncode is not None else 128 + signal.SIGTERM
    finally:
        stop_namespace_processes(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_namespace_processes(name: str) -> None:
    """SIGTERM, then SIGKILL, to whatever still runs in the namespace (all of it ours)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        pids = [int(pid) for pid in listed.split()]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not pids:
            return
        try:
            wait_for(lambda listed=pids: not any(_alive(pid) for pid in listed), timeout=10,
                     what=f"processes in {name} to exit")
        except TimeoutError:
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_once(signum, frame):
    """In the namespace: the first SIGTERM or SIGINT unwinds (clean-up runs), later ones are ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def set_up_loopback() -> None:
    _ip("link", "set", "lo", "up")
    # The namespace's own setting (default 10): room for a burst of postlogd datagrams.
    subprocess.run(["sysctl", "-qw", "net.unix.max_dgram_qlen=512"], check=True)
    for address in (S6, R6A, R6B, R6M):
        _ip("-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad")
    _ip("addr", "add", f"{R4}/32", "dev", "lo")


def run_matrix(args) -> dict:
    set_up_loopback()
    work = Path(tempfile.mkdtemp(prefix="mx6-senders-"))
    work.chmod(0o755)
    cells, versions, windows = [], {}, {}
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        dns = Port53Dns(zones(), work)
        stack.callback(dns.close)
        dns.start()
        redis = RedisServer()
        stack.callback(redis.close)
        redis.start()
        receiver = Receiver(redis.url, work)
        stack.callback(receiver.close)
        receiver.start()
        for sender_name in args.senders:
            sender = SENDERS[sender_name](work, args.retry)
            try:
                sender.start()
                versions[sender_name] = sender.version()
                windows[sender_name] = window = args.cell_timeout or default_window(sender)
                for layout in args.layouts:
                    cell = run_cell(sender, layout, receiver, window)
                    print(f"{sender_name:13} {layout}: {cell.summary()}", file=sys.stderr, flush=True)
                    cells.append(cell)
            finally:
                sender.stop()
    return {"date": datetime.date.today().isoformat(), "machine": platform.node(),
            "retry_seconds": args.retry, "window_seconds": windows, "versions": versions,
            "layouts": {name: text for name, (text, _) in LAYOUTS.items() if name in args.layouts},
            "cells": [asdict(cell) for cell in cells]}


def table(result: dict) -> str:
    """The matrix as an RST grid: a row per sender, a column per layout."""
    layouts = list(result["layouts"])
    rows = [["sender"] + [f"({name})" for name in layouts]]
    by_key = {(c["sender"], c["layout"]): Cell(**c) for c in result["cells"]}
    for sender in dict.fromkeys(c["sender"] for c in result["cells"]):
        rows.append([sender] + [by_key[(sender, layout)].summary() for layout in layouts])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [rule]
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        lines.append(rule.replace("-", "=") if index == 0 else rule)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.senders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", default=",".join(SENDERS),
                        help=f"comma-separated, from {', '.join(SENDERS)} (default: all)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help="comma-separated, from a-e (default: all)")
    parser.add_argument("--retry", type=int, default=30,
                        help="the senders' retry interval in seconds (default 30)")
    parser.add_argument("--cell-timeout", type=float, default=0,
                        help="seconds to wait for one message (default: until the sender's second "
                             "retry and some: 2.5 x retry + 20; OpenSMTPD, whose retries are its "
                             "own, 1820)")
    parser.add_argument("--json", help="write the result here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    args.senders = [s for s in args.senders.split(",") if s]
    args.layouts = [layout for layout in args.layouts.split(",") if layout]
    unknown = [s for s in args.senders if s not in SENDERS] + \
        [layout for layout in args.layouts if layout not in LAYOUTS]
    if unknown:
        parser.error(f"unknown sender or layout: {', '.join(unknown)}")
    for sender, binary in (("exim", EXIM), ("opensmtpd", SMTPD), ("sendmail", SENDMAIL)):
        if any(name.startswith(sender) for name in args.senders) and not binary.exists():
            parser.error(f"{binary} missing: run scripts/install.sh")
    if os.geteuid() != 0:
        parser.error("needs root (a network namespace, port 25 and 53)")
    if not os.environ.get(NETNS_ENV):
        return run_in_namespace(raw)
    signal.signal(signal.SIGTERM, _stop_once)
    signal.signal(signal.SIGINT, _stop_once)
    result = run_matrix(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
