"""Real servers the tests start: redis-server on a free port (more join later)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import redis


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


class RedisServer:
    """A private redis-server on loopback; stop() and start() simulate an outage."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mx6-redis-")
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return self.client().ping()
        except redis.exceptions.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CountingConnection(redis.Connection):
    """Counts how often the client writes to Redis: one write per round trip."""
    writes = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.writes += 1
        return super().send_packed_command(command, check_health)
