"""The MX6-aware sender over the wire: a real BIND on loopback, Postfix's smtp-sink as
the receivers (it can be told which reply to give), and, for per-recipient replies and
hostile servers, a small scripted SMTP server in the test."""
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from mx6milter.outbound import sender
from mx6milter.dns import Resolver

from dnsserver import DnsServer
from postfix import free_dual_port, parse_dump
from servers import free_port, wait_for

MESSAGE = b"From: s@example.net\nTo: u@example.org\nSubject: mx6 sender test\n\n.leading dot\nHello.\n"
PORT = free_dual_port()                    # MX route (with the port override) and IPv4 sinks
P_FB, P_V6ONLY = free_dual_port(), free_dual_port()     # SRV ports of IPv6 targets on ::1
P_T1, P_T2 = free_dual_port(), free_dual_port()

ZONE = f"""$TTL 300
@               IN SOA  ns hostmaster 1 3600 600 86400 300
                IN NS   ns
ns              IN A    127.0.0.1
; SRV target with IPv6 (::1) and IPv4, on its own port
_mx6._tcp.fb    IN SRV  0 0 {P_FB} t.fb
t.fb            IN A    127.0.8.1
t.fb            IN AAAA ::1
fb              IN MX   10 mx.fb
mx.fb           IN A    127.0.8.1
; two MX hosts, no SRV
mx              IN MX   10 a.mx
mx              IN MX   20 b.mx
a.mx            IN A    127.0.8.2
b.mx            IN A    127.0.8.3
; SRV target with IPv6 only: the fallback goes to the MX over IPv4
_mx6._tcp.v6only IN SRV 0 0 {P_V6ONLY} t.v6only
t.v6only        IN AAAA ::1
v6only          IN MX   10 mx.v6only
mx.v6only       IN A    127.0.8.4
; two SRV targets: after the fallback reply from the first, the second only over IPv4
_mx6._tcp.two   IN SRV  0 0 {P_T1} t1.two
_mx6._tcp.two   IN SRV  10 0 {P_T2} t2.two
t1.two          IN AAAA ::1
t1.two          IN A    127.0.8.9
t2.two          IN AAAA ::1
t2.two          IN A    127.0.8.10
; a null MX; a "." SRV target
null            IN MX   0 .
_mx6._tcp.dot   IN SRV  0 0 0 .
dot             IN MX   10 mx.dot
mx.dot          IN A    127.0.8.5
; an MX host with IPv6, as an unaware sender may meet one
plain6          IN MX   10 mx.plain6
mx.plain6       IN A    127.0.8.8
mx.plain6       IN AAAA ::1
; a scripted server
script          IN MX   10 a.script
script          IN MX   20 b.script
a.script        IN A    127.0.8.6
b.script        IN A    127.0.8.7
"""


@pytest.fixture(scope="module")
def dns_world():
    empty = Path(tempfile.mkdtemp(prefix="mx6-nozones-"))
    server = DnsServer(template_dir=empty, extra_zones={"t.example": ZONE}).start()
    yield server
    server.close()
    shutil.rmtree(empty, ignore_errors=True)


class Sink:
    """smtp-sink on ADDRESS:PORT, one dump file per transaction; FLAGS pick its replies."""

    def __init__(self, address, port, *flags):
        self.dir = Path(tempfile.mkdtemp(prefix="mx6-sink-"))
        shutil.chown(self.dir, "postfix")
        self.address, self.port = address, port
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.process = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-h", f"sink-{address}", *flags,
             "-d", f"{self.dir}/%H%M%S.", where, "10"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"smtp-sink on {where}")

    def _answers(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"smtp-sink on {self.address}:{self.port} exited")
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as sock:
                sock.recv(100)
                sock.sendall(b"QUIT\r\n")
            return True
        except OSError:
            return False

    def messages(self):
        return [parse_dump(p) for p in sorted(self.dir.iterdir())]

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sinks():
    started = []

    def start(address, port, *flags):
        started.append(Sink(address, port, *flags))
        return started[-1]
    yield start
    for sink in started:
        sink.close()


def make_sender(dns_world, **options):
    resolver = Resolver([("127.0.0.1", dns_world.port)], timeout=2)
    defaults = dict(helo="sender.test", mx_port=PORT, connect_timeout=3, command_timeout=5,
                    data_timeout=5)
    defaults.update(options)
    return sender.Sender(resolver, sender.Options(**defaults))


def statuses(result):
    return [(r.recipient, r.status) for r in result.recipients]


FALLBACK = ("-f", ".", "-B", "550 5.5.7 Fall back to IPv4")


# --- the SRV route ---------------------------------------------------------------------


def test_ipv6_accepts_so_ipv4_is_never_tried(dns_world, sinks):
    six, four = sinks("::1", P_FB), sinks("127.0.8.1", P_FB)
    result = make_sender(dns_world).send("s@example.net", ["u@fb.t.example"], MESSAGE)
    assert statuses(result) == [("u@fb.t.example", "delivered")]
    assert result.transcript.connections() == [("::1", 6, P_FB)]
    assert len(six.messages()) == 1 and four.messages() == []
    assert result.recipients[0].family == 6 and result.exit_code == 0
    assert b"\n.leading dot" in six.messages()[0].raw     # dot-stuffed and restored


def test_fallback_reply_after_data_moves_to_ipv4(dns_world, sinks):
    sinks("::1", P_FB, *FALLBACK)
    four = sinks("127.0.8.1", P_FB)
    result = make_sender(dns_world).send("s@example.net", ["u@fb.t.example"], MESSAGE)
    assert statuses(result) == [("u@fb.t.example", "delivered")]
    assert result.transcript.connections() == [("::1", 6, P_FB), ("127.0.8.1", 4, P_FB)]
    assert result.recipients[0].address == "127.0.8.1"
    assert [[r.strip("<>") for r in m.rcpts] for m in four.messages()] == [["u@fb.t.example"]]


@pytest.mark.parametrize("reply", ["550 5.5.8 Fall back to IPv4",      # enhanced code differs
                                   "554 5.5.7 Fall back to IPv4",      # basic code differs
                                   "550 Fall back to IPv4"])           # no enhanced code
def test_other_5xx_after_data_bounces_without_ipv4(dns_world, sinks, reply):
    sinks("::1", P_FB, "-f", ".", "-B", reply)
    four = sinks("127.0.8.1", P_FB)
    result = make_sender(dns_world).send("s@example.net", ["u@fb.t.example"], MESSAGE)
    assert statuses(result) == [("u@fb.t.example", "bounced")]
    assert reply in result.recipients[0].reason
    assert result.transcript.connections() == [("::1", 6, P_FB)]
    assert four.messages() == [] and result.exit_code == 69


def test_configured_fallback_code_is_the_one_recognised(dns_world, sinks):
    sinks("::1", P_FB, "-f", ".", "-B", "551 5.7.26 go use IPv4")
    four = sinks("127.0.8.1", P_FB)
    result = make_sender(dns_world, fallback_code="551", fallback_status="5.7.26").send(
        "s@example.net", ["u@fb.t.example"], MESSAGE)
    assert statuses(result) == [("u@fb.t.example", "delivered")]
    assert len(four.messages()) == 1


def test_plain_sender_bounces_on_the_fallback_code(dns_world, sinks):
    """The proposal picks 5xx so that an unaware sender on IPv6 by mistake fails at once."""
    sinks("::1", PORT, *FALLBACK)
    four = sinks("127.0.8.8", PORT)
    result = make_sender(dns_world, aware=False).send("s@example.net", ["u@plain6.t.example"],
                                                      MESSAGE)
    assert statuses(result) == [("u@plain6.t.example", "bounced")]
    assert result.transcript.connections() == [("::1", 6, PORT)]
    assert four.messages() == []


def test_after_the_fallback_reply_no_ipv6_address_is_tried(dns_world, sinks):
    sinks("::1", P_T1, *FALLBACK)                    # t1 over IPv4: nothing listens
    t2_six, t2_four = sinks("::1", P_T2), sinks("127.0.8.10", P_T2)
    result = make_sender(dns_world).send("s@example.net", ["u@two.t.example"], MESSAGE)
    assert statuses(result) == [("u@two.t.example", "delivered")]
    assert result.transcript.connections() == [("::1", 6, P_T1), ("127.0.8.9", 4, P_T1),
                                               ("127.0.8.10", 4, P_T2)]
    assert t2_six.messages() == [] and len(t2_four.messages()) == 1


def test_4xx_over_ipv6_tries_ipv4_of_the_same_target(dns_world, sinks):
    sinks("::1", P_FB, "-r", ".")
    four = sinks("127.0.8.1", P_FB)
    result = make_sender(dns_world).send("s@example.net", ["u@fb.t.example"], MESSAGE)
    assert statuses(result) == [("u@fb.t.example", "delivered")]
    assert result.transcript.connections() == [("::1", 6, P_FB), ("127.0.8.1", 4, P_FB)]
    assert len(four.messages()) == 1


def test_srv_target_without_a_falls_back_to_the_mx_over_ipv4(dns_world, sinks):
    sinks("::1", P_V6ONLY, *FALLBACK)
    mx = sinks("127.0.8.4", PORT)
    result = make_sender(dns_world).send("s@example.net", ["u@v6only.t.example"], MESSAGE)
    assert statuses(result) == [("u@v6only.t.example", "delivered")]
    assert result.transcript.connections() == [("::1", 6, P_V6ONLY), ("127.0.8.4", 4, PORT)]
    assert len(mx.messages()) == 1
    assert [line for line in result.transcript.lines() if line.startswith(";;")] == [
        ";; SRV _mx6._tcp.v6only.t.example", ";; A t.v6only.t.example",
        ";; AAAA t.v6only.t.example", ";; MX v6only.t.example", ";; A mx.v6only.t.example"]
    steps = [line.strip() for line in result.transcript.lines() if line.startswith("   ")]
    after = steps[steps.index("No IPv4 host of the SRV record took the message"):]
    assert after[:4] == ['No IPv4 host of the SRV record took the message',
                         'Looks up "MX v6only.t.example"',
                         f"Gets mx.v6only.t.example port {PORT} and then 127.0.8.4",
                         f"Connects via IPv4 to 127.0.8.4 port {PORT}"]


# --- the MX route ------------------------------------------------------------------------


def test_4xx_from_the_first_mx_goes_to_the_next(dns_world, sinks):
    _first, second = sinks("127.0.8.2", PORT, "-r", "."), sinks("127.0.8.3", PORT)
    result = make_sender(dns_world).send("s@example.net", ["u@mx.t.example"], MESSAGE)
    assert statuses(result) == [("u@mx.t.example", "delivered")]
    assert result.transcript.connections() == [("127.0.8.2", 4, PORT), ("127.0.8.3", 4, PORT)]
    assert len(second.messages()) == 1 and result.recipients[0].host == "b.mx.t.example"


def test_accepted_at_the_first_mx_is_never_sent_again(dns_world, sinks):
    first, second = sinks("127.0.8.2", PORT), sinks("127.0.8.3", PORT)
    result = make_sender(dns_world).send("s@example.net", ["u@mx.t.example", "v@mx.t.example"],
                                         MESSAGE)
    assert statuses(result) == [("u@mx.t.example", "delivered"), ("v@mx.t.example", "delivered")]
    assert len(first.messages()) == 1 and second.messages() == []


def test_lost_reply_after_the_dot_is_not_retried_elsewhere(dns_world, sinks):
    """The first host may have accepted: offering it to the second could duplicate it."""
    sinks("127.0.8.2", PORT, "-q", ".")
    second = sinks("127.0.8.3", PORT)
    result = make_sender(dns_world).send("s@example.net", ["u@mx.t.example"], MESSAGE)
    assert statuses(result) == [("u@mx.t.example", "deferred")]
    assert "not offered to another host" in result.recipients[0].reason
    assert result.transcript.connections() == [("127.0.8.2", 4, PORT)]
    assert second.messages() == [] and result.exit_code == 75


def test_unreachable_hosts_defer(dns_world):
    result = make_sender(dns_world).send("s@example.net", ["u@mx.t.example"], MESSAGE)
    assert statuses(result) == [("u@mx.t.example", "deferred")]
    assert result.transcript.connections() == [("127.0.8.2", 4, PORT), ("127.0.8.3", 4, PORT)]


def test_srv_dot_target_uses_the_mx_over_ipv4(dns_world, sinks):
    mx = sinks("127.0.8.5", PORT)
    result = make_sender(dns_world).send("s@example.net", ["u@dot.t.example"], MESSAGE)
    assert statuses(result) == [("u@dot.t.example", "delivered")]
    assert result.plans[0].route == "mx" and len(mx.messages()) == 1


def test_null_mx_bounces_without_connecting(dns_world):
    result = make_sender(dns_world).send("s@example.net", ["u@null.t.example"], MESSAGE)
    assert statuses(result) == [("u@null.t.example", "bounced")]
    assert "null MX" in result.recipients[0].reason
    assert result.transcript.connections() == []


def test_dns_temporary_failure_defers_and_is_not_absence():
    dead = free_port()           # nothing answers here
    resolver = Resolver([("127.0.0.1", dead)], timeout=0.5)
    s = sender.Sender(resolver, sender.Options(helo="sender.test", mx_port=PORT))
    result = s.send("s@example.net", ["u@fb.t.example"], MESSAGE)
    assert statuses(result) == [("u@fb.t.example", "deferred")]
    assert "temporary DNS failure" in result.recipients[0].reason
    assert result.plans[0].lookups == (("_mx6._tcp.fb.t.example", "SRV"),)   # no MX lookup
    assert result.transcript.connections() == [] and result.exit_code == 75


# --- per-recipient replies and hostile servers: a scripted server ---------------------------


class ScriptedServer:
    """A tiny SMTP server: RCPT replies per recipient, or raw bytes as the greeting."""

    def __init__(self, address, port, rcpt_replies=None, greeting=b"220 scripted ESMTP\r\n"):
        self.rcpt_replies = rcpt_replies or {}
        self.greeting = greeting
        self.transactions = []       # (recipients, data) of every accepted DATA
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(5)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn.makefile("rb"), conn)
                except OSError:
                    pass

    def _session(self, reader, conn):
        conn.sendall(self.greeting)
        rcpts = []
        for line in reader:
            command = line.strip().decode()
            upper = command.upper()
            if upper.startswith(("EHLO", "HELO")):
                conn.sendall(b"250-scripted\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif upper.startswith("MAIL"):
                rcpts = []
                conn.sendall(b"250 2.1.0 Ok\r\n")
            elif upper.startswith("RCPT"):
                address = command.split("<", 1)[1].rstrip(">")
                reply = self.rcpt_replies.get(address, "250 2.1.5 Ok")
                if reply.startswith("2"):
                    rcpts.append(address)
                conn.sendall(reply.encode() + b"\r\n")
            elif upper == "DATA":
                conn.sendall(b"354 go ahead\r\n")
                data = b""
                for body_line in reader:
                    if body_line == b".\r\n":
                        break
                    data += body_line
                self.transactions.append((rcpts, data))
                conn.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif upper == "QUIT":
                conn.sendall(b"221 Bye\r\n")
                return
            else:
                conn.sendall(b"502 5.5.2 what?\r\n")

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the thread blocked in accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def scripted():
    started = []

    def start(*args, **kwargs):
        started.append(ScriptedServer(*args, **kwargs))
        return started[-1]
    yield start
    for server in started:
        server.close()


def test_recipient_deferred_at_one_host_goes_to_the_next_alone(dns_world, scripted):
    first = scripted("127.0.8.6", PORT, {"v@script.t.example": "452 4.2.2 Mailbox full",
                                         "w@script.t.example": "550 5.1.1 No such user"})
    second = scripted("127.0.8.7", PORT)
    rcpts = ["u@script.t.example", "v@script.t.example", "w@script.t.example"]
    result = make_sender(dns_world).send("s@example.net", rcpts, MESSAGE)
    assert statuses(result) == [("u@script.t.example", "delivered"),
                                ("v@script.t.example", "delivered"),
                                ("w@script.t.example", "bounced")]
    assert [r for r, _ in first.transactions] == [["u@script.t.example"]]
    assert [r for r, _ in second.transactions] == [["v@script.t.example"]]
    assert result.recipients[1].host == "b.script.t.example"
    assert result.exit_code == 69


@pytest.mark.parametrize("greeting", [
    b"hello, I am not SMTP\r\n",
    b"".join(b"220-flood\r\n" for _ in range(500)),
    b"220 " + b"x" * 10000 + b"\r\n",
    b"554 5.7.1 go away\r\n",
])
def test_hostile_or_refusing_first_host_is_skipped(dns_world, scripted, greeting):
    scripted("127.0.8.6", PORT, greeting=greeting)
    second = scripted("127.0.8.7", PORT)
    result = make_sender(dns_world).send("s@example.net", ["u@script.t.example"], MESSAGE)
    assert statuses(result) == [("u@script.t.example", "delivered")]
    assert len(second.transactions) == 1
    assert result.transcript.connections() == [("127.0.8.6", 4, PORT), ("127.0.8.7", 4, PORT)]


def test_source_address_is_used(dns_world, sinks):
    mx = sinks("127.0.8.5", PORT)
    result = make_sender(dns_world, source_ipv4="127.0.8.99").send(
        "s@example.net", ["u@dot.t.example"], MESSAGE)
    assert statuses(result) == [("u@dot.t.example", "delivered")]
    assert mx.messages()[0].client_addr == "127.0.8.99"
