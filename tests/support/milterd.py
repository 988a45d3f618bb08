"""The real mx6milter daemon as a subprocess: ``.venv/bin/mx6milter -c CONF``.

    with MilterDaemon(tmp_path, "unix:/path/m.sock", redis_url, extra_ini) as milter:
        milter.socket, milter.log(), milter.reload(new_ini), milter.pid

The config is written with small DNS timeouts; ``extra`` INI text is merged
section by section (see conftest.make_config). The directory is made
world-readable so a daemon that drops to an unprivileged user can still
read its config on SIGHUP.
"""
from __future__ import annotations

import configparser
import ctypes
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Self

from servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
MX6MILTER = str(ROOT / ".venv" / "bin" / "mx6milter")
MX6CTL = str(ROOT / ".venv" / "bin" / "mx6ctl")


def merge_ini(*texts: str) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    for text in texts:
        parser.read_string(text)
    return "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in parser.items(s, raw=True))
                     for s in parser.sections()) + "\n"


def milter_ini(socket_spec: str, redis_url: str, nameservers: str = "127.0.0.1:9",
               extra: str = "") -> str:
    base = (f"[milter]\nsocket = {socket_spec}\n[redis]\nurl = {redis_url}\n"
            f"[dns]\nnameservers = {nameservers}\ntimeout = 0.5\nbudget = 1\n"
            f"[policy]\nauthserv_id = mx.example.org\n")
    return merge_ini(base, extra)


class MilterDaemon:
    def __init__(self, directory: Path, socket_spec: str, redis_url: str,
                 extra: str = "", nameservers: str = "127.0.0.1:9", wrapper: tuple = (),
                 executable: str = MX6MILTER):
        self.wrapper = list(wrapper)   # e.g. setpriv ... --, to start it with fewer rights
        self.executable = executable   # another installation's mx6milter (the .deb's)
        self.dir = Path(directory)
        self.socket = socket_spec
        self.conf = self.dir / "mx6milter.conf"
        self.log_path = self.dir / "mx6milter.log"
        self.text = milter_ini(socket_spec, redis_url, nameservers, extra)
        self.process = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def unix_path(self) -> Path | None:
        kind, _, rest = self.socket.partition(":")
        return Path(rest) if kind in ("unix", "local") else None

    def start(self) -> MilterDaemon:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.conf.write_text(self.text)
        self.conf.chmod(0o644)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([*self.wrapper, self.executable, "-c", str(self.conf)],
                                        stdout=log, stderr=log)
        log.close()
        wait_for(self._ready, timeout=30, what=f"mx6milter on {self.socket}")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"mx6milter exited {self.process.returncode}:\n{self.log()}")
        return "listening on" in self.log() and self.answers()

    def answers(self) -> bool:
        """Something accepts connections on the milter socket."""
        path = self.unix_path
        try:
            if path is not None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(str(path))
            else:
                port, _, host = self.socket.split(":", 1)[1].partition("@")
                socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), 1).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 10) -> None:
        wait_for(lambda: needle in self.log(), timeout=timeout, what=f"{needle!r} in the milter log")

    def reload(self, text: str) -> None:
        """Write a new config and send SIGHUP."""
        self.conf.write_text(text)
        self.process.send_signal(signal.SIGHUP)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def proc_ids(pid: int) -> dict:
    """Real/effective uid and gid and supplementary groups of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
    return fields


def mx6ctl(conf: Path, *args: str) -> str:
    result = subprocess.run([MX6CTL, "-c", str(conf), *args], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"mx6ctl {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout


def wait_gone(pid: int, timeout: float = 10) -> None:
    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    wait_for(gone, timeout=timeout, what=f"process {pid} to exit")


def listener_nodelay(pid: int, port: int) -> bool:
    """TCP_NODELAY as set on process pid's listening socket for port, read back.

    pidfd_getfd (Linux 5.6+, root) duplicates the daemon's own descriptor into
    this process, so getsockopt sees the option on the very socket libmilter
    accepts from.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:   # 0A: LISTEN
                inodes.add(inode)
    if not inodes:
        raise LookupError(f"nothing listens on TCP port {port}")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                fd = libc.syscall(438, pidfd, int(name), 0)   # SYS_pidfd_getfd
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_getfd failed")
                with socket.socket(fileno=fd) as sock:
                    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        os.close(pidfd)
    raise LookupError(f"process {pid} holds no listening socket for port {port}")
