"""The MX6 proposal's four scenarios, and the defensive strategy's 4xx path, end to end.

Real parts only:

* DNS: BIND on loopback serving tests/data/zones/{only4,with6}.example.zone (the
  proposal's zones, 10.0.0.1 -> 127.0.6.1, 10.0.0.2 -> 127.0.6.2, ::ffff:a00:2 ->
  2001:db8:66::2) and a defensive.example zone (an IPv6-only MX before an IPv4 one).
* Receivers: one private Postfix per receiving domain, each listening on port 25 of
  the addresses its zone names (IPv6 addresses are added to lo for the test and
  removed after). The IPv6 listeners run the real mx6milter daemon: in mx6 mode for
  with6.example, in defensive mode for defensive.example. Every accepted message is
  relayed to that instance's smtp-sink, where the tests read where it arrived.
* Senders: mx6milter.outbound.sender, MX6-aware, or plain (aware=False) as the unaware party,
  from 127.0.7.10 and 2001:db8:67::10; once through `mx6ctl send`.

Each test asserts the lookups the DNS server received, the connections made, and the
listener the message finally arrived at.
"""
import json
import os
import shutil
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mx6milter.config import RedisSection
from mx6milter.dns import Resolver
from mx6milter.entries import parse_ipv6_prefix
from mx6milter.outbound.sender import Options, Sender
from mx6milter.store import Store
from mx6milter.prefixes import ip_field

from dnsserver import DnsServer, ZONE_TEMPLATES
from milterd import MX6CTL, MilterDaemon
from postfix import DEFAULT_LISTENERS, PrivatePostfix
from servers import free_port, wait_for

SENDER_V4 = "127.0.7.10"
SENDER_V6 = "2001:db8:67::10"
WITH6_V6 = "2001:db8:66::2"        # the proposal's ::ffff:a00:2
DEFENSIVE_V6 = "2001:db8:66::3"
ADDED_V6 = (SENDER_V6, WITH6_V6, DEFENSIVE_V6)
ONLY4_V4, WITH6_V4, DEFENSIVE_V4 = "127.0.6.1", "127.0.6.2", "127.0.6.3"

DEFENSIVE_ZONE = f"""$TTL 300
@       IN SOA  ns hostmaster 1 3600 600 86400 300
        IN NS   ns
ns      IN A    127.0.0.1
; A receiver following the defensive strategy: its IPv6 MX answers 4xx to mail
; without positive evidence, and a well-behaved sender moves on to the IPv4 MX.
@       IN MX   0 mx6
@       IN MX   10 mx
mx6     IN AAAA {DEFENSIVE_V6}
mx      IN A    {DEFENSIVE_V4}
"""

# The sender's domain as the receivers' milters see it: SPF covers its IPv4 only.
SENDER_ZONE = f"""$TTL 300
@       IN SOA  ns hostmaster 1 3600 600 86400 300
        IN NS   ns
ns      IN A    127.0.0.1
@       IN TXT  "v=spf1 ip4:{SENDER_V4} -all"
_dmarc  IN TXT  "v=DMARC1; p=none"
"""

MESSAGE = (b"From: Sender <s@sender.example>\r\nTo: u@example\r\nSubject: MX6 scenario\r\n"
           b"Message-ID: <scenario@sender.example>\r\n\r\nHello over the wire.\r\n")


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _has_address(address):
    out = subprocess.run(["ip", "-6", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True).stdout
    return f" {address}/128 " in out


def _port_25_free(address):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as Postfix does
        try:
            sock.bind((address, 25))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def addresses():
    """The zones' IPv6 addresses on lo (127/8 is loopback already); removed afterwards."""
    added = []
    try:
        for address in ADDED_V6:
            if not _has_address(address):
                _ip("-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad")
                added.append(address)
        for address in (ONLY4_V4, WITH6_V4, DEFENSIVE_V4, WITH6_V6, DEFENSIVE_V6):
            assert _port_25_free(address), f"port 25 on {address} is taken"
        yield
    finally:
        for address in added:
            _ip("-6", "addr", "del", f"{address}/128", "dev", "lo")


def _serve(templates, extra):
    directory = Path(tempfile.mkdtemp(prefix="mx6-zones-"))
    for name in templates:
        shutil.copy(ZONE_TEMPLATES / f"{name}.zone", directory)
    server = DnsServer(template_dir=directory, extra_zones=extra).start()
    return server, directory


@pytest.fixture(scope="module")
def world_dns():
    """The DNS the senders use; its query log is the lookups of the scenarios."""
    server, directory = _serve(["only4.example", "with6.example"],
                               {"defensive.example": DEFENSIVE_ZONE})
    yield server
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def milter_dns():
    """The DNS the receivers' milters use (SPF, DMARC of the sender), kept apart."""
    server, directory = _serve([], {"sender.example": SENDER_ZONE})
    yield server
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


def _listener(address, name, milter=False):
    where = f"[{address}]:25" if ":" in address else f"{address}:25"
    line = f"{where} inet n - y - - smtpd -o myhostname={name}"
    if milter:
        line += " -o smtpd_milters=unix:mx6milter/mx6milter.sock"
    return line + "\n"


class Receiver:
    """One receiving organisation: a private Postfix and, for IPv6, the milter."""

    def __init__(self, domain, listeners, mode=None, redis_url="", nameservers=""):
        self.postfix = PrivatePostfix(
            main_cf=f"relay_domains = {domain}\nmilter_default_action = tempfail\n",
            listeners=DEFAULT_LISTENERS + "".join(listeners))
        self.milter = None
        if mode:
            socket_path = self.postfix.queue_dir / "mx6milter" / "mx6milter.sock"
            self.milter = MilterDaemon(
                Path(tempfile.mkdtemp(prefix=f"mx6-milter-{mode}-")), f"unix:{socket_path}",
                redis_url, nameservers=nameservers,
                extra=f"[policy]\nmode = {mode}\nauthserv_id = mx6.{domain}\n"
                      "[milter]\nsocket_mode = 0666\n[dns]\ntimeout = 1\nbudget = 3\n")

    def start(self):
        if self.milter:
            self.milter.start()
        self.postfix.start()
        return self

    def arrived(self):
        self.postfix.wait_until_idle(timeout=30)
        return self.postfix.sink.messages()

    def close(self):
        self.postfix.close()
        if self.milter:
            self.milter.stop()
            shutil.rmtree(self.milter.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def receivers(addresses, redis_server, milter_dns):
    started = {}
    try:
        # Listed before starting, so a failed start still stops what did start.
        started["only4"] = Receiver("only4.example", [
            _listener(ONLY4_V4, "mx.only4.example")])
        started["only4"].start()
        started["with6"] = Receiver("with6.example", [
            _listener(WITH6_V4, "mx.with6.example"),
            _listener(WITH6_V6, "mx6.with6.example", milter=True)],
            mode="mx6", redis_url=redis_server.url, nameservers=milter_dns.nameservers)
        started["with6"].start()
        started["defensive"] = Receiver("defensive.example", [
            _listener(DEFENSIVE_V4, "mx.defensive.example"),
            _listener(DEFENSIVE_V6, "mx6.defensive.example", milter=True)],
            mode="defensive", redis_url=redis_server.url, nameservers=milter_dns.nameservers)
        started["defensive"].start()
        yield started
    finally:
        for receiver in started.values():
            receiver.close()


@pytest.fixture
def world(receivers, world_dns, redis_server):
    redis_server.client().flushall()
    # Sink files sort by name only to the second: remember paths, not counts.
    before = {name: {m.path for m in r.arrived()} for name, r in receivers.items()}
    start = world_dns.query_count()

    class World:
        dns = world_dns
        store = Store.from_config(RedisSection(url=redis_server.url, timeout=2.0))

        @staticmethod
        def lookups():
            return world_dns.queries()[start:]

        @staticmethod
        def arrivals():
            """name -> messages that arrived during this test."""
            return {name: [m for m in r.arrived() if m.path not in before[name]]
                    for name, r in receivers.items()}

        @staticmethod
        def sender(aware=True):
            resolver = Resolver([("127.0.0.1", world_dns.port)], timeout=2)
            return Sender(resolver, Options(
                helo="mail.sender.example", aware=aware, source_ipv4=SENDER_V4,
                source_ipv6=SENDER_V6, connect_timeout=5, command_timeout=20, data_timeout=30))

    return World


def received_by(message):
    """The Received header the receiving Postfix added (the sink's own comes first)."""
    headers = message.header("Received")
    # Not the sending Postfix's own hop (the MX6-aware Postfix's tests).
    postfix = [h for h in headers if "(Postfix)" in h and "by mail.sender.example" not in h]
    assert len(postfix) == 1, headers
    return " ".join(postfix[0].split())


def only_arrival(arrivals, where):
    assert {name: len(msgs) for name, msgs in arrivals.items()} == \
        {name: int(name == where) for name in arrivals}, arrivals
    return arrivals[where][0]


# --- the four scenarios --------------------------------------------------------------------


def test_unaware_sender_to_aware_receiver_uses_ipv4(world):
    """Looks up "MX with6.example"; gets mx.with6.example and then 10.0.0.2;
    connects via IPv4 to 10.0.0.2; proceeds as usual."""
    result = world.sender(aware=False).send("s@sender.example", ["u@with6.example"], MESSAGE)
    assert world.lookups() == [("with6.example", "MX"), ("mx.with6.example", "A"),
                               ("mx.with6.example", "AAAA")]
    assert result.transcript.connections() == [(WITH6_V4, 4, 25)]
    assert [(r.recipient, r.status) for r in result.recipients] == [("u@with6.example", "delivered")]
    message = only_arrival(world.arrivals(), "with6")
    assert f"[{SENDER_V4}]" in received_by(message) and "by mx.with6.example" in received_by(message)
    assert message.header("X-MX6-Verdict") == []      # IPv4 never meets the milter's judgement


def test_aware_sender_to_unaware_receiver_finds_no_srv_and_uses_ipv4(world):
    """Looks up "SRV _mx6._tcp.only4.example"; gets nothing; looks up "MX
    only4.example"; gets mx.only4.example and then 10.0.0.1; connects via IPv4."""
    result = world.sender().send("s@sender.example", ["u@only4.example"], MESSAGE)
    assert world.lookups() == [("_mx6._tcp.only4.example", "SRV"), ("only4.example", "MX"),
                               ("mx.only4.example", "A")]
    assert result.transcript.connections() == [(ONLY4_V4, 4, 25)]
    assert result.exit_code == 0
    message = only_arrival(world.arrivals(), "only4")
    assert f"[{SENDER_V4}]" in received_by(message) and "by mx.only4.example" in received_by(message)


def test_both_aware_receiver_willing_accepts_over_ipv6(world):
    """Looks up "SRV _mx6._tcp.with6.example"; gets mx6.with6.example and then
    10.0.0.2 and ::ffff:a00:2; connects via IPv6; proceeds as usual."""
    world.store.add("ip", "local", [("", ip_field(parse_ipv6_prefix(SENDER_V6)), "0")])
    result = world.sender().send("s@sender.example", ["u@with6.example"], MESSAGE)
    assert world.lookups() == [("_mx6._tcp.with6.example", "SRV"), ("mx6.with6.example", "A"),
                               ("mx6.with6.example", "AAAA")]
    assert result.transcript.connections() == [(WITH6_V6, 6, 25)]
    assert result.recipients[0].status == "delivered" and result.recipients[0].family == 6
    message = only_arrival(world.arrivals(), "with6")
    assert f"[IPv6:{SENDER_V6}]" in received_by(message)
    assert "by mx6.with6.example" in received_by(message)
    verdict = message.header("X-MX6-Verdict")
    assert len(verdict) == 1 and verdict[0].startswith(f"whitelisted; evidence=ip=pass({SENDER_V6}/128")
    assert "mode=mx6" in verdict[0]


def test_both_aware_receiver_unwilling_550_after_data_then_ipv4(world, tmp_path):
    """... connects via IPv6; after the DATA phase gets 550 5.5.x; connects via
    IPv4 to 10.0.0.2; proceeds as usual. Run through `mx6ctl send --json`."""
    conf = tmp_path / "sender.conf"
    conf.write_text(f"[dns]\nnameservers = 127.0.0.1:{world.dns.port}\n")
    message_file = tmp_path / "message.eml"
    message_file.write_bytes(MESSAGE)
    run = subprocess.run([MX6CTL, "-c", str(conf), "send", "--json", "--helo", "mail.sender.example",
                          "--from", "s@sender.example", "--to", "u@with6.example",
                          "--source-ipv4", SENDER_V4, "--source-ipv6", SENDER_V6,
                          "--timeout", "20", str(message_file)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert world.lookups() == [("_mx6._tcp.with6.example", "SRV"), ("mx6.with6.example", "A"),
                               ("mx6.with6.example", "AAAA")]
    connects = [(e["address"], e["family"], e["port"]) for e in result["transcript"]
                if e["kind"] == "connect"]
    assert connects == [(WITH6_V6, 6, 25), (WITH6_V4, 4, 25)]
    # The 550 came after the message, from the milter, with the fallback status code.
    server_lines = [e["text"] for e in result["transcript"] if e["kind"] == "server"]
    dot = [i for i, e in enumerate(result["transcript"]) if e["kind"] == "client" and e["text"] == "."]
    after_first_dot = result["transcript"][dot[0] + 1]["text"]
    assert after_first_dot.startswith(("550-5.5.7 Fall back to IPv4", "550 5.5.7 Fall back to IPv4"))
    assert any(line.startswith("550") and "Authentication-Results: mx6.with6.example;" in line
               for line in server_lines)
    assert result["recipients"] == [{"recipient": "u@with6.example", "status": "delivered",
                                     "reason": result["recipients"][0]["reason"],
                                     "host": "mx6.with6.example", "address": WITH6_V4, "family": 4}]
    message = only_arrival(world.arrivals(), "with6")          # once, over IPv4
    assert f"[{SENDER_V4}]" in received_by(message) and "by mx.with6.example" in received_by(message)
    assert message.header("X-MX6-Verdict") == []


# --- the defensive strategy ------------------------------------------------------------------


def test_plain_sender_meets_4xx_over_ipv6_and_delivers_over_ipv4(world):
    """An IPv6-only MX answers 451 4.7.26 after DATA (SPF fails over IPv6, no DKIM); the IPv4
    MX behind it takes the mail."""
    result = world.sender(aware=False).send("s@sender.example", ["u@defensive.example"], MESSAGE)
    assert world.lookups() == [("defensive.example", "MX"),
                               ("mx6.defensive.example", "A"), ("mx6.defensive.example", "AAAA"),
                               ("mx.defensive.example", "A"), ("mx.defensive.example", "AAAA")]
    assert result.transcript.connections() == [(DEFENSIVE_V6, 6, 25), (DEFENSIVE_V4, 4, 25)]
    assert any(line.startswith(("<- 451 4.7.26", "<- 451-4.7.26"))
               for line in result.transcript.lines())
    assert result.recipients[0].status == "delivered"
    message = only_arrival(world.arrivals(), "defensive")
    assert f"[{SENDER_V4}]" in received_by(message)
    assert "by mx.defensive.example" in received_by(message)


# --- a stock Postfix made MX6-aware: mx6ctl transport-map and the pipe(8) service -------------
#
# contrib/postfix/mx6-aware.cf's pieces: transport_maps asks `mx6ctl transport-map`, which
# answers "mx6:" for a domain publishing SRV _mx6._tcp; the mx6 service pipes the message
# to `mx6ctl send`. Other domains go to Postfix's own smtp client; this world's BIND is not
# on port 53, so here that client's route is a fixed next hop standing in for the MX lookup.


def _contrib_aware_master_cf(**values) -> str:
    """The pipe(8) service of contrib/postfix/mx6-aware.cf, with this world's values filled in."""
    text = (Path(__file__).resolve().parents[2] / "contrib" / "postfix" / "mx6-aware.cf").read_text()
    service = text.split("# --- master.cf", 1)[1].split("# --- main.cf", 1)[0]
    lines = [line for line in service.splitlines()[1:] if line and not line.startswith("#")]
    for name, value in values.items():
        assert sum(line.count(name) for line in lines) == 1, name
        lines = [line.replace(name, value) for line in lines]
    return "\n".join(lines) + "\n"


def _interpreter_hidden_from(user: str):
    """The directory that keeps USER from the venv's interpreter (/root for a pyenv in /root), or None."""
    check = subprocess.run(["su", "-s", "/bin/sh", user, "-c", f"{sys.executable} -c pass"],
                           capture_output=True)
    if check.returncode == 0:
        return None
    path = Path(os.path.realpath(sys.executable))
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent, path.relative_to(parent).parts[0]
    return None


class AwarePostfix(PrivatePostfix):
    """A private Postfix whose mx6 transport runs `mx6ctl send` as the user nobody."""

    def __init__(self, map_port, nameserver):
        super().__init__(main_cf=f"""\
myhostname = mail.sender.example
relay_domains =
transport_maps = socketmap:inet:127.0.0.1:{map_port}:mx6
mx6_destination_recipient_limit = 1
default_transport = smtp:[{ONLY4_V4}]:25
smtp_bind_address = {SENDER_V4}
""")
        self.pipe = _contrib_aware_master_cf(**{
            "/usr/local/bin/mx6ctl": MX6CTL, "mail.example.org": "mail.sender.example",
            "--source-ipv4 192.0.2.25": f"--source-ipv4 {SENDER_V4} --nameserver {nameserver}",
            "--source-ipv6 2001:db8::25": f"--source-ipv6 {SENDER_V6} --timeout 20"})
        self.hidden = _interpreter_hidden_from("nobody")

    def master_cf(self) -> str:
        return super().master_cf() + self.pipe

    def postfix(self, *args, check=True):
        if args != ("start",) or self.hidden is None:
            return super().postfix(*args, check=check)
        # This machine's interpreter lives under a directory nobody may not enter (a pyenv in
        # /root): Postfix, and so the pipe, runs in a mount namespace where that directory is
        # a world-readable tmpfs holding only the interpreter's tree.
        parent, child = self.hidden
        keep = self.dir / "interpreter"
        keep.mkdir(exist_ok=True)
        script = (f"set -e; mount --bind {parent / child} {keep}; "
                  f"mount -t tmpfs -o mode=755 tmpfs {parent}; mkdir {parent / child}; "
                  f"mount --bind {keep} {parent / child}; exec postfix -c {self.config_dir} start")
        result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                capture_output=True, text=True)
        if check and result.returncode:
            raise RuntimeError(f"postfix start: {result.stdout}{result.stderr}")
        return result


@pytest.fixture(scope="module")
def aware_postfix(receivers, world_dns):
    map_port = free_port()
    service = subprocess.Popen(
        [MX6CTL, "transport-map", "--listen", f"inet:127.0.0.1:{map_port}",
         "--nameserver", f"127.0.0.1:{world_dns.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    postfix = AwarePostfix(map_port, f"127.0.0.1:{world_dns.port}")
    try:
        wait_for(lambda: _answers(map_port), timeout=20, what="mx6ctl transport-map")
        postfix.start()
        yield postfix
    finally:
        postfix.close()
        service.terminate()
        service.wait(timeout=10)


def _answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _send_through(postfix, rcpt):
    start = len(postfix.log())
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        client.sendmail("s@sender.example", [rcpt], MESSAGE)
    postfix.wait_until_idle(timeout=90)
    log = postfix.log()[start:]
    assert "status=bounced" not in log and "status=deferred" not in log, log
    return log


def test_aware_postfix_both_aware_receiver_unwilling_delivers_over_ipv4_without_bounce(
        world, aware_postfix, receivers):
    """The proposal's "both aware, receiver unwilling", with a stock Postfix as the sender:
    the pipe's mx6ctl send meets the 550 after DATA over IPv6 and delivers over IPv4."""
    receiver_log = len(receivers["with6"].postfix.log())
    log = _send_through(aware_postfix, "u@with6.example")
    assert "relay=mx6" in log and "status=sent" in log, log
    assert ("_mx6._tcp.with6.example", "SRV") in world.lookups()
    message = only_arrival(world.arrivals(), "with6")          # once, over IPv4
    assert f"[{SENDER_V4}]" in received_by(message) and "by mx.with6.example" in received_by(message)
    # The IPv6 attempt was refused by the milter with the MX6 fallback status, after the data.
    refused = [line for line in receivers["with6"].postfix.log()[receiver_log:].splitlines()
               if "milter-reject: END-OF-MESSAGE" in line]
    assert len(refused) == 1 and ": 5.5.7 Fall back to IPv4" in refused[0], refused


def test_aware_postfix_both_aware_receiver_willing_delivers_over_ipv6(world, aware_postfix):
    world.store.add("ip", "local", [("", ip_field(parse_ipv6_prefix(SENDER_V6)), "0")])
    log = _send_through(aware_postfix, "u@with6.example")
    assert "relay=mx6" in log and "status=sent" in log, log
    message = only_arrival(world.arrivals(), "with6")
    assert f"[IPv6:{SENDER_V6}]" in received_by(message)
    assert "by mx6.with6.example" in received_by(message)


def test_aware_postfix_receiver_unaware_goes_to_postfix_own_smtp(world, aware_postfix):
    """No SRV _mx6._tcp.only4.example: the map says NOTFOUND and Postfix's smtp client delivers."""
    log = _send_through(aware_postfix, "u@only4.example")
    assert "relay=mx6" not in log and f"relay={ONLY4_V4}[{ONLY4_V4}]:25" in log, log
    assert ("_mx6._tcp.only4.example", "SRV") in world.lookups()
    message = only_arrival(world.arrivals(), "only4")
    assert f"[{SENDER_V4}]" in received_by(message)
