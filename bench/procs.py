"""The processes a benchmark run starts, and stops again: Postfix, milters, DNS.

Nothing here changes the machine beyond the run: loopback addresses are
added for the run and removed after it, every server listens on loopback
only, and every process is stopped by its own pid.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from dnsserver import DnsServer  # noqa: E402
from postfix import master_services  # noqa: E402
from servers import RedisServer, free_port, wait_for  # noqa: E402

from .milterclient import wait_for_socket  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
__all__ = ["DnsServer", "RedisServer", "free_port", "wait_for"]


class LoopbackAddresses:
    """IPv6 client addresses on lo for the run: a connection to one comes from it."""

    def __init__(self, addresses):
        self.addresses = [a for a in addresses if ":" in a and a != "::1"]
        self.added = []

    def __enter__(self):
        for address in self.addresses:
            result = subprocess.run(["ip", "-6", "addr", "add", f"{address}/128", "dev", "lo",
                                     "nodad"], capture_output=True, text=True)
            if result.returncode == 0:
                self.added.append(address)
                continue
            # One already there (another run holds it) is used, and left to its owner to remove.
            if not any(text in result.stderr for text in ("File exists", "already assigned")):
                raise RuntimeError(f"ip -6 addr add {address}: {result.stderr.strip()}")
        return self

    def __exit__(self, *exc):
        for address in self.added:
            subprocess.run(["ip", "-6", "addr", "del", f"{address}/128", "dev", "lo"],
                           capture_output=True)


class BenchDns(DnsServer):
    """The test DNS server, also on port 53 of one more loopback address.

    OpenDMARC resolves through the C library, which reads /etc/resolv.conf and
    knows no ports; it runs in a mount namespace whose resolv.conf names it.
    """
    PORT53_ADDRESS = "127.0.0.153"

    def _write_config(self) -> None:
        super()._write_config()
        path = self.dir / "named.conf"
        text = path.read_text()
        path.write_text(text.replace(
            "    recursion no;",
            f"    listen-on port 53 {{ {self.PORT53_ADDRESS}; }};\n    recursion no;", 1))


class Process:
    """A foreground server process with its output in a log file."""

    def __init__(self, name: str, argv: list, log: Path, socket: str | None = None, env=None,
                 cwd: Path | None = None):
        self.name, self.argv, self.log_path, self.socket = name, argv, log, socket
        self.env = env
        self.cwd = cwd
        self.process = None

    def start(self) -> Process:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=self.cwd, start_new_session=True)
        if self.socket:
            try:
                wait_for_socket(self.socket, timeout=30)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen on {self.socket}; "
                                   f"see {self.log_path}:\n{self.tail()}") from None
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.log.close()
        self.process = None


def mx6milter_config(path: Path, socket: str, redis_url: str, nameservers: str,
                     level: str = "info", processes: int = 1, metrics: str = "",
                     journal: bool = True, milter_extra: str = "") -> Path:
    path.write_text(f"""\
[milter]
socket = {socket}
socket_mode = 0666
processes = {processes}
{milter_extra}
[redis]
url = {redis_url}
[policy]
mode = defensive
authserv_id = mx.example.org
[dns]
nameservers = {nameservers}
[report]
record = {"yes" if journal else "no"}
[log]
level = {level}
[metrics]
listen = {metrics}
""")
    return path


def mx6milter(name: str, out: Path, socket: str, redis_url: str, nameservers: str,
              nagle: bool = False, level: str = "info", processes: int = 1,
              metrics: str = "", journal: bool = True, milter_extra: str = "",
              code: Path = ROOT) -> Process:
    """The real daemon; nagle=True starts it with TCP_NODELAY left off, for the A/B;
    METRICS: [metrics] listen (empty: off); journal=False leaves out the background
    write of [report] record; MILTER_EXTRA: more [milter] lines; CODE: the source tree
    to run (another commit's)."""
    config = mx6milter_config(out / f"{name}.conf", socket, redis_url, nameservers, level,
                              processes, metrics, journal, milter_extra)
    launcher = ["-m", "bench.nagle_launcher"] if nagle else ["-m", "mx6milter.cli"]
    return Process(name, [PYTHON, *launcher, "-c", str(config)], out / f"{name}.log", socket,
                   # -m puts the working directory first on sys.path: run it in CODE
                   env={**os.environ, "PYTHONPATH": str(code)}, cwd=code)


def null_milter(name: str, out: Path, socket: str, nodelay: bool = False) -> Process:
    flags = ["--nodelay"] if nodelay else []
    return Process(name, [PYTHON, "-m", "bench.nullmilter", socket, *flags], out / f"{name}.log",
                   socket, env={**os.environ, "PYTHONPATH": str(ROOT)})


def opendkim(out: Path, testkeys: Path) -> Process:
    socket = out / "opendkim.sock"
    (out / "opendkim-internal").write_text("192.0.2.1\n")   # nobody: verify every client
    config = out / "opendkim.conf"
    config.write_text(f"""\
Mode v
Socket local:{socket}
UMask 000
PidFile {out}/opendkim.pid
Syslog no
AuthservID mx.example.org
AlwaysAddARHeader yes
InternalHosts {out}/opendkim-internal
TestPublicKeys {testkeys}
""")
    return Process("opendkim", ["opendkim", "-f", "-x", str(config)], out / "opendkim.log",
                   f"unix:{socket}")


def opendmarc(out: Path, nameserver: str) -> Process:
    socket = out / "opendmarc.sock"
    (out / "opendmarc-ignore").write_text("192.0.2.1\n")    # nobody: judge every client
    (out / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:1\n")
    config = out / "opendmarc.conf"
    config.write_text(f"""\
Socket local:{socket}
UMask 000
PidFile {out}/opendmarc.pid
Syslog false
AuthservID mx.example.org
TrustedAuthservIDs mx.example.org
IgnoreHosts {out}/opendmarc-ignore
SPFSelfValidate true
SPFIgnoreResults true
RejectFailures false
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
""")
    script = (f"mount --bind {out}/resolv.conf /etc/resolv.conf && "
              f"exec opendmarc -f -c {config}")
    return Process("opendmarc", ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                   out / "opendmarc.log", f"unix:{socket}")


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
myhostname = mx.example.org
mydomain = example.org
mydestination =
inet_interfaces = {interfaces}
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128 [2001:db8:b0::]/44
relay_domains = example.org
# The final hop is nothing: what is measured is the SMTP server and its milters.
default_transport = discard:bench
relay_transport = discard:bench
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
default_process_limit = 300
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
milter_protocol = 6
milter_default_action = tempfail
"""


class BenchPostfix:
    """One private Postfix, one smtpd listener (port) per milter configuration.

    Sharing one instance (one queue, one cleanup and qmgr) between the
    configurations keeps everything but the milter equal between them.
    """

    def __init__(self, directory: Path, interfaces: list, listeners: dict):
        self.dir = directory
        self.interfaces = interfaces
        self.ports = {name: free_port() for name in listeners}
        self.listeners = listeners          # name -> smtpd_milters value ("" for none)
        self.started = False

    def write_config(self) -> None:
        for sub in ("etc", "queue", "data"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        shutil.chown(self.dir / "data", "postfix")
        interfaces = ", ".join(f"[{a}]" if ":" in a else a for a in self.interfaces)
        (self.dir / "etc" / "main.cf").write_text(MAIN_CF.format(dir=self.dir,
                                                                 interfaces=interfaces))
        master = master_services(chroot=False)   # no chroot tree here
        for name, milters in self.listeners.items():
            master += (f"{self.ports[name]} inet n - n - - smtpd\n"
                       f"  -o syslog_name=postfix-{name}\n"
                       f"  -o {{ smtpd_milters = {milters} }}\n")
        (self.dir / "etc" / "master.cf").write_text(master)

    def postfix(self, *args, check=True):
        result = subprocess.run(["postfix", "-c", str(self.dir / "etc"), *args],
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {result.stdout}{result.stderr}\n"
                               f"{self.log_tail()}")
        return result

    def start(self) -> BenchPostfix:
        self.write_config()
        self.postfix("check")
        self.started = True
        self.postfix("start")
        for port in self.ports.values():
            wait_for_socket(f"inet:{port}@127.0.0.1", timeout=20)
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.started:
            return
        pid = self.master_pid()
        self.postfix("stop", check=False)
        if pid:
            try:
                wait_for(lambda: not _alive(pid), timeout=20, what="Postfix master to exit")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
        self.started = False

    def queue_size(self) -> int:
        count = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            root = self.dir / "queue" / sub
            if root.is_dir():
                count += sum(len(files) for _, _, files in os.walk(root))
        return count

    def wait_until_idle(self, timeout: float = 120) -> None:
        wait_for(lambda: self.queue_size() == 0, timeout=timeout, interval=0.2,
                 what="the Postfix queue to drain")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / "maillog").read_text(errors="replace")
                             .splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def smtp_source(host: str, port: int, sessions: int, messages: int, message_file: Path,
                sender: str, recipient: str, helo: str) -> subprocess.Popen:
    """Postfix's load generator; -A: a 4xx from the milter is an answer, not an abort."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return subprocess.Popen(
        ["smtp-source", "-A", "-s", str(sessions), "-m", str(messages), "-F", str(message_file),
         "-f", sender, "-t", recipient, "-M", helo, target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_all(processes: list, timeout: float = 600) -> list:
    """Wait for every process; (returncode, stderr) each."""
    deadline = time.monotonic() + timeout
    results = []
    for proc in processes:
        try:
            _out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        results.append((proc.returncode, err.decode(errors="replace")))
    return results
