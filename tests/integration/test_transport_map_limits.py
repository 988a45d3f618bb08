"""mx6ctl transport-map serves at most --max-connections Postfix connections at once.

The real command on a real socket: a connection past the cap is closed unanswered (Postfix
then defers and retries), the ones within it are answered, and a slot comes back when its
connection ends. DNS points at a closed port, so every answer is TEMP: what is under test
is who gets an answer at all.
"""
from __future__ import annotations

import socket
import subprocess

import pytest
from milterd import MX6CTL
from servers import free_port, wait_for

REQUEST = b"20:mx6 user@example.org,"


@pytest.fixture
def transport_map():
    port = free_port()
    service = subprocess.Popen(
        [MX6CTL, "transport-map", "--listen", f"inet:127.0.0.1:{port}", "--max-connections", "2",
         "--nameserver", f"127.0.0.1:{free_port()}", "--dns-timeout", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Its "serving" line comes once the socket listens. (Not a probe connection: its
        # thread could still hold a slot when the test's own connections arrive.)
        assert b"serving" in service.stderr.readline()
        yield port, service
    finally:
        service.terminate()
        service.wait(timeout=10)


def _ask(conn: socket.socket) -> bytes:
    """The reply to one request, b"" when the service hung up instead."""
    try:
        conn.sendall(REQUEST)
        reply = b""
        while not reply.endswith(b","):
            chunk = conn.recv(4096)
            if not chunk:
                return b""
            reply += chunk
        return reply
    except (ConnectionResetError, BrokenPipeError):
        return b""


def test_a_connection_past_the_cap_is_closed_and_a_slot_comes_back(transport_map):
    port, service = transport_map
    first, second = (socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2))
    assert _ask(first).split(b":", 1)[1].startswith(b"TEMP ")
    assert _ask(second).split(b":", 1)[1].startswith(b"TEMP ")     # both slots held

    third = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert _ask(third) == b""                                       # over the cap: hung up
    third.close()

    first.close()                   # its thread ends and gives its slot back

    def answered() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            return _ask(conn) != b""
    wait_for(answered, what="a slot freed by the closed connection")
    assert _ask(second).split(b":", 1)[1].startswith(b"TEMP ")      # the other one is still served
    second.close()

    service.terminate()
    _, err = service.communicate(timeout=10)
    assert b"too many connections; 1 refused so far" in err


def test_the_cap_must_be_a_positive_number():
    run = subprocess.run([MX6CTL, "transport-map", "--listen", "inet:127.0.0.1:1",
                          "--max-connections", "0", "--nameserver", "127.0.0.1"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "--max-connections 0: expected at least 1" in run.stderr
