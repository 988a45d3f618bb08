"""The soak with a ledger: mixed IPv4 and IPv6 mail through a private Postfix with
mx6milter while its dependencies fail, and an account of every message.

    sudo .venv/bin/python -m bench.soak --messages 100000 --out bench/out/soak

Postfix runs both documented layouts at once (README, "Deploying with Postfix"):
layout 1, one listener with the milter for every client (contrib/postfix/main.cf),
and layout 2, contrib/postfix/master.cf's dedicated listeners, whose IPv4 listener
has no milter. mx6milter runs with ``[milter] processes = 2``; the final hop is
smtp-sink, one file per transaction. Clients send one message per connection,
each with a unique Message-ID, and retry nothing: every reply is recorded.

Faults, on a fixed schedule while mail flows: every ``--fault-period`` seconds
(10) Redis is SIGKILLed and restarted (and primed again: it keeps nothing), and
half a period later the next of: Redis hung (SIGSTOP, SIGCONT), BIND hung (the
DNS server stalls: SIGSTOP, SIGCONT), the whole milter SIGKILLed (supervisor and
workers) and restarted, one worker SIGKILLed (the supervisor replaces it).

The ledger (``account``): sent = delivered + refused + unanswered; lost (accepted,
never delivered), duplicated (delivered twice), delivered though refused or never
sent, IPv6 mail delivered without our verdict header or with the wrong tier, the
fallback kind ever accepted, IPv4 refused on layout 2 (never allowed) and IPv4
refused on layout 1 outside the moments a milter process died (allowed only while
no milter was alive, or for the sessions a killed worker was serving).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import smtplib
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.reversename

from . import procs

sys.path.insert(0, str(procs.ROOT / "tests" / "support"))
from e2e import smtp_send
from milterd import mx6ctl, wait_gone
from servers import wait_for
from postfix import DEFAULT_LISTENERS, PrivatePostfix, contrib_master_cf, free_dual_port

DOMAIN = "soak.example"
HELO = f"mail.{DOMAIN}"
SENDER = f"sender@{DOMAIN}"
RECIPIENT = "user@example.org"
GREEN = "2001:db8:55::10"          # FCrDNS: PTR mail.soak.example, which has this AAAA
WHITE = "2001:db8:56::10"          # inside the whitelisted 2001:db8:56::/48
UNKNOWN = "2001:db8:57::10"        # no evidence: always falls back
WHITELISTED_PREFIX = "2001:db8:56::/48"
# The log line of a process that serves mail (a worker, or the only process);
# the supervisor's line ends in ", N worker processes".
SERVING = re.compile(rb"INFO listening on \S+, mode \w+\n")


@dataclass(frozen=True)
class Kind:
    name: str
    source: str          # the client's address (bound by the SMTP client)
    listener: str        # "layout1" (milter on every session) or "layout2" (contrib master.cf)
    tier: str            # the verdict expected when accepted; "" for IPv4 (not judged)


KINDS = (
    Kind("ipv4", "127.0.0.1", "layout1", ""),
    Kind("ipv4-own-listener", "127.0.0.1", "layout2", ""),
    Kind("whitelisted", WHITE, "layout1", "whitelisted"),
    Kind("greenlisted", GREEN, "layout2", "greenlisted"),
    Kind("fallback", UNKNOWN, "layout1", "none"),
)
KIND = {kind.name: kind for kind in KINDS}


def zones() -> dict:
    reverse = dns.reversename.from_address(GREEN)
    origin = dns.reversename.from_address("2001:db8:55::").split(12 + 3)[1]   # the /48's zone
    label = reverse.relativize(origin).to_text()
    # TTL 1 s: the resolver's cache must not hide a stalled DNS server for long.
    head = "$TTL 1\n@ IN SOA ns.{0}. hostmaster.{0}. 1 3600 600 86400 1\n@ IN NS ns.{0}.\n"
    return {
        DOMAIN: head.format(DOMAIN) + (
            f"ns IN A 127.0.0.1\nmail IN AAAA {GREEN}\n"
            '@ IN TXT "v=spf1 ip6:2001:db8:55::/48 ip6:2001:db8:56::/48 -all"\n'
            '_dmarc IN TXT "v=DMARC1; p=none"\n'),
        origin.to_text(omit_final_dot=True): head.format(DOMAIN) + f"{label} IN PTR {HELO}.\n",
    }


def message(msg_id: str, kind: str) -> bytes:
    return (f"From: Sender <{SENDER}>\r\nTo: {RECIPIENT}\r\nSubject: soak {kind}\r\n"
            f"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: {msg_id}\r\n"
            f"X-Soak-Kind: {kind}\r\n\r\n" + "A line of the soak's message body.\r\n" * 20
            ).encode()


# --- the system under test ------------------------------------------------------------

class System:
    """Redis, BIND, a private Postfix (both layouts) and mx6milter, processes = 2."""

    def __init__(self, out: Path, processes: int = 2):
        self.out = out
        self.processes = processes
        self.redis = procs.RedisServer()
        self.dns = procs.DnsServer(extra_zones=zones())
        self.layout2 = free_dual_port()
        mx6_port = free_dual_port()
        listeners = DEFAULT_LISTENERS + contrib_master_cf({
            "192.0.2.25:smtp": f"127.0.0.1:{self.layout2}",
            "[2001:db8::25]:smtp": f"[::1]:{self.layout2}",
            "[2001:db8::26]:smtp": f"[::1]:{mx6_port}"})        # MX6 listener: unused here
        main_cf = (procs.ROOT / "contrib" / "postfix" / "main.cf").read_text()
        self.postfix = PrivatePostfix(main_cf=main_cf, listeners=listeners, directory=out / "postfix")
        self.milter: procs.Process | None = None
        self.addresses = procs.LoopbackAddresses([GREEN, WHITE, UNKNOWN])

    def port(self, kind: Kind) -> int:
        return self.postfix.port if kind.listener == "layout1" else self.layout2

    def start(self) -> System:
        self.addresses.__enter__()
        self.redis.start()
        self.dns.start()
        self.postfix.start()
        (self.postfix.queue_dir / "mx6milter").mkdir(exist_ok=True)
        self.milter = procs.mx6milter(
            "mx6milter", self.out, f"unix:{self.postfix.queue_dir}/mx6milter/mx6milter.sock",
            self.redis.url, self.dns.nameservers, processes=self.processes)
        self.milter.start()
        self.prime()
        return self

    def prime(self) -> None:
        mx6ctl(self.out / "mx6milter.conf", "ip", "add", WHITELISTED_PREFIX)

    def stop(self) -> None:
        for process in (self.redis.process, self.dns.process):     # maybe hung by a fault
            if process and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
        if self.milter:
            self.milter.stop()
        self.postfix.stop()
        self.dns.close()
        self.redis.close()
        self.addresses.__exit__()

    def workers(self) -> list:
        pid = self.milter.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []


# --- faults ---------------------------------------------------------------------------

@dataclass
class FaultLog:
    events: list = field(default_factory=list)        # (monotonic time, what)
    milter_down: list = field(default_factory=list)   # [killed, serving again]: no milter alive
    worker_kills: list = field(default_factory=list)  # when one worker of two was killed

    def note(self, what: str) -> float:
        now = time.monotonic()
        self.events.append((now, what))
        return now


class Faults(threading.Thread):
    """The schedule: Redis killed every PERIOD s; half-way between, the next other fault."""

    OTHERS = ("redis-hang", "dns-stall", "milter-kill", "worker-kill")

    def __init__(self, system: System, period: float, pause: float, on_error):
        super().__init__(name="soak-faults", daemon=True)
        self.system, self.period, self.pause = system, period, pause
        self.on_error = on_error
        self.log = FaultLog()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        # On the clock: a fault that takes long (a restart under load) delays the next
        # one, and the one after comes sooner, so Redis dies every PERIOD s on average.
        start = time.monotonic()
        try:
            for slot in itertools.count(1):
                if self.done.wait(max(0.0, start + slot * self.period / 2 - time.monotonic())):
                    return
                if slot % 2:
                    self.redis_kill()
                else:
                    turn = slot // 2 - 1
                    getattr(self, self.OTHERS[turn % len(self.OTHERS)].replace("-", "_"))()
        except BaseException as err:       # reported by the run, which then fails
            self.error = err
            self.on_error()

    def redis_kill(self) -> None:
        redis = self.system.redis
        redis.process.kill()
        redis.process.wait()
        self.log.note("redis-kill")
        time.sleep(1)
        redis.start()
        self.system.prime()
        self.log.note("redis-restarted")

    def _hang(self, process, what: str) -> None:
        os.kill(process.pid, signal.SIGSTOP)
        self.log.note(what)
        try:
            time.sleep(self.pause)
        finally:
            os.kill(process.pid, signal.SIGCONT)
            self.log.note(what + "-over")

    def redis_hang(self) -> None:
        self._hang(self.system.redis.process, "redis-hang")

    def dns_stall(self) -> None:
        self._hang(self.system.dns.process, "dns-stall")

    def milter_kill(self) -> None:
        milter = self.system.milter
        workers = self.system.workers()
        os.killpg(milter.pid, signal.SIGKILL)         # the supervisor and its workers
        killed = self.log.note("milter-kill")
        milter.process.wait()
        milter.log.close()
        for pid in workers:        # a dying worker's listener still takes connections
            wait_gone(pid)
        offset = milter.log_path.stat().st_size
        milter.start()
        # Up again when a process that serves mail listens (not the supervisor alone).
        wait_for(lambda: SERVING.search(milter.log_path.read_bytes()[offset:]) is not None,
                 timeout=60, interval=0.02, what="the restarted milter to serve")
        self.log.milter_down.append((killed, self.log.note("milter-restarted")))

    def worker_kill(self) -> None:
        workers = self.system.workers()
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            self.log.worker_kills.append(self.log.note("worker-kill"))


# --- sending ----------------------------------------------------------------------------

@dataclass
class Sent:
    msg_id: str
    kind: str
    start: float
    end: float
    code: int            # 0: no answer (connection lost or timed out)
    text: str


def send_all(system: System, run_id: str, messages: int, seconds: float, sessions: int,
             stop: threading.Event) -> list:
    """MESSAGES (or until SECONDS pass) over SESSIONS threads, kinds in turn."""
    counter = itertools.count()
    deadline = time.monotonic() + seconds if seconds else None
    ledger: list = []
    lock = threading.Lock()

    def worker():
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            number = next(counter)
            if number >= messages:
                return
            kind = KINDS[number % len(KINDS)]
            msg_id = f"<soak-{run_id}-{number}@{DOMAIN}>"
            start = time.monotonic()
            try:
                reply = smtp_send(system.port(kind), kind.source, SENDER, [RECIPIENT],
                                  message(msg_id, kind.name), helo=HELO)
                code, text = reply.code, reply.lines[0] if reply.lines else ""
            except smtplib.SMTPResponseException as err:    # a refusal of DATA itself
                code, text = err.smtp_code, err.smtp_error.decode(errors="replace")
            except (smtplib.SMTPException, OSError) as err:
                code, text = 0, f"{type(err).__name__}: {err}"
            with lock:
                ledger.append(Sent(msg_id, kind.name, start, time.monotonic(), code, text))

    threads = [threading.Thread(target=worker, name=f"soak-client-{n}") for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ledger


# --- the account -------------------------------------------------------------------------

MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>\r\n]*>)", re.MULTILINE | re.IGNORECASE)
VERDICT = re.compile(rb"^X-MX6-Verdict: ([a-z]+)", re.MULTILINE | re.IGNORECASE)


def read_sink(directory: Path) -> dict:
    """Message-ID -> [verdict tier or "" per delivered copy], from smtp-sink's dump files."""
    arrived: dict = {}
    for path in directory.iterdir():
        raw = path.read_bytes()
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        found = MESSAGE_ID.search(head)
        verdict = VERDICT.search(head)
        key = found.group(1).decode(errors="replace") if found else f"(none: {path.name})"
        arrived.setdefault(key, []).append(verdict.group(1).decode() if verdict else "")
    return arrived


def _during(sent: Sent, windows: list) -> bool:
    return any(sent.start <= end and start <= sent.end for start, end in windows)


@dataclass
class Account:
    sent: int = 0
    delivered: int = 0
    refused: int = 0
    unanswered: int = 0                  # no reply seen: connection lost or timed out
    lost: list = field(default_factory=list)            # accepted, never delivered
    duplicated: list = field(default_factory=list)      # delivered more than once
    unexpected: list = field(default_factory=list)      # delivered, but refused or never sent
    wrong_verdict: list = field(default_factory=list)   # IPv6 delivered without its tier
    fallback_accepted: list = field(default_factory=list)
    ipv4_refused_milter_dead: int = 0                   # layout 1, no milter alive
    ipv4_refused_worker_killed: int = 0                 # layout 1, its worker was killed
    ipv4_refused_otherwise: list = field(default_factory=list)   # never allowed
    ipv4_refused_layout2: list = field(default_factory=list)     # never allowed
    by_kind: dict = field(default_factory=dict)         # kind -> {"accepted": n, "refused": n...}
    refusals: dict = field(default_factory=dict)        # "kind code text" -> n

    @property
    def ok(self) -> bool:
        return (self.sent == self.delivered + self.refused + self.unanswered and not self.lost
                and not self.duplicated and not self.unexpected and not self.wrong_verdict
                and not self.fallback_accepted and not self.ipv4_refused_otherwise
                and not self.ipv4_refused_layout2)


def account(ledger: list, arrived: dict, faults: FaultLog) -> Account:
    result = Account(sent=len(ledger))
    worker_windows = [(t, t) for t in faults.worker_kills]
    for sent in ledger:
        copies = arrived.get(sent.msg_id, [])
        outcome = "accepted" if sent.code == 250 else "unanswered" if sent.code == 0 else "refused"
        counts = result.by_kind.setdefault(sent.kind, {"accepted": 0, "refused": 0, "unanswered": 0})
        counts[outcome] += 1
        if len(copies) > 1:
            result.duplicated.append(sent.msg_id)
        if outcome == "accepted":
            _accepted(result, sent, copies)
        elif outcome == "unanswered":
            result.unanswered += 1
        else:
            _refused(result, sent, copies, faults.milter_down, worker_windows)
    result.unexpected += sorted(set(arrived) - {sent.msg_id for sent in ledger})
    return result


def _accepted(result: Account, sent: Sent, copies: list) -> None:
    kind = KIND[sent.kind]
    result.delivered += 1
    if not copies:
        result.lost.append(sent.msg_id)
    elif kind.tier and any(tier != kind.tier for tier in copies):
        result.wrong_verdict.append((sent.msg_id, copies))
    if kind.tier == "none":
        result.fallback_accepted.append(sent.msg_id)


def _refused(result: Account, sent: Sent, copies: list, milter_down: list,
             worker_windows: list) -> None:
    kind = KIND[sent.kind]
    result.refused += 1
    if copies:
        result.unexpected.append(sent.msg_id)
    label = f"{sent.kind} {sent.code} {sent.text[:60]}"
    result.refusals[label] = result.refusals.get(label, 0) + 1
    if kind.tier:                      # IPv6: falling back is allowed
        return
    if kind.listener == "layout2":
        result.ipv4_refused_layout2.append((sent.msg_id, sent.code, sent.text))
    elif _during(sent, milter_down):
        result.ipv4_refused_milter_dead += 1
    elif _during(sent, worker_windows):
        result.ipv4_refused_worker_killed += 1
    else:
        result.ipv4_refused_otherwise.append((sent.msg_id, sent.code, sent.text))


# --- the run ---------------------------------------------------------------------------------

def run(out: Path, messages: int = 100_000, seconds: float = 0, sessions: int = 8,
        period: float = 10, pause: float = 3, processes: int = 2,
        drain_timeout: float = 900, command: str = "") -> dict:
    """One soak; returns its summary (also written to OUT/soak.json)."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)
    run_id = time.strftime("%Y%m%d%H%M%S")
    system = System(out, processes)
    stop = threading.Event()
    faults = Faults(system, period, pause, on_error=stop.set)
    try:
        system.start()
        started = time.monotonic()
        faults.start()
        ledger = send_all(system, run_id, messages, seconds, sessions, stop)
        faults.done.set()
        if faults.is_alive():
            faults.join()
        sending = time.monotonic() - started
        if faults.error:
            raise RuntimeError(f"the fault schedule failed: {faults.error!r}") from faults.error
        alive = system.milter.process.poll() is None
        system.postfix.wait_until_idle(timeout=drain_timeout)
        result = account(ledger, read_sink(system.postfix.sink.dir), faults.log)
    finally:
        stop.set()
        faults.done.set()
        system.stop()
    events: dict = {}
    for _, what in faults.log.events:
        events[what] = events.get(what, 0) + 1
    summary = {
        "command": command, "run": run_id, "seconds_sending": round(sending, 1),
        "messages_per_second": round(len(ledger) / sending, 1), "sessions": sessions,
        "processes": processes, "fault_period": period, "fault_pause": pause,
        "faults": events, "milter_alive_at_end": alive, "ok": result.ok and alive,
        "schedule": [(round(when - started, 1), what) for when, what in faults.log.events],
        "no_milter_alive_seconds": [round(end - start, 1) for start, end in faults.log.milter_down],
    }
    for name, value in asdict(result).items():
        if isinstance(value, list):      # counted; the first few kept to look at
            summary[name], summary[name + "_examples"] = len(value), value[:20]
        else:
            summary[name] = value
    (out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "ledger.jsonl", "w") as handle:
        handle.writelines(json.dumps(asdict(sent)) + "\n" for sent in ledger)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="how many (default 100000)")
    parser.add_argument("--seconds", type=float, default=0,
                        help="stop sending after this long even if fewer were sent (0: no limit)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent SMTP clients (8)")
    parser.add_argument("--fault-period", type=float, default=10,
                        help="seconds between Redis kills; other faults half-way (10)")
    parser.add_argument("--fault-pause", type=float, default=3,
                        help="seconds Redis and BIND stay hung (3)")
    parser.add_argument("--processes", type=int, default=2, help="mx6milter [milter] processes (2)")
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench" / "out" / "soak",
                        help="working directory: Postfix, the sink, logs, soak.json, ledger.jsonl")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it adds loopback addresses and runs a private Postfix")
    summary = run(args.out.resolve(), args.messages, args.seconds, args.sessions,
                  args.fault_period, args.fault_pause, args.processes,
                  command="python -m bench.soak " + " ".join(sys.argv[1:]))
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
