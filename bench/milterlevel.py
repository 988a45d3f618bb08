"""Milter level: the decision path alone, through the milter protocol.

No MTA: bench/milterclient.py speaks the protocol to the real daemon on a
unix socket. Also counts what a decision costs: Redis round trips (through
a counting proxy) and commands (INFO commandstats), and DNS queries for a
repeat sender within the TTL (the DNS server's query log).
"""
from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass

from . import inputs, procs
from .milterclient import Envelope, percentile, run_load


def envelopes(inp: inputs.Inputs, count: int, kinds=None) -> list:
    chosen = [k for k in inputs.KINDS if kinds is None or k.name in kinds]
    out = []
    for i in range(count):
        kind = chosen[i % len(chosen)]
        out.append(Envelope(kind.client, f"mail.{kind.domain}", kind.sender,
                            (inputs.RECIPIENT,), inp.messages[kind.name],
                            queue_id=f"Q{i:07X}", kind=kind.name))
    return out


def cold_envelopes(messages: list) -> list:
    return [Envelope(inputs.COLD_CLIENT, "mail.cold.example", sender, (inputs.RECIPIENT,), raw,
                     queue_id=f"C{i:07X}", kind="cold") for i, (sender, raw) in enumerate(messages)]


@dataclass
class LatencyRow:
    cache: str
    sessions: int
    messages: int
    rate: float
    p50: float
    p99: float
    max: float
    errors: int
    actions: dict


def measure(address: str, envs: list, sessions: int, cache: str,
            rate: float | None = None) -> LatencyRow:
    result = run_load(address, envs, sessions, rate)
    judged = result.latencies([k.name for k in inputs.KINDS if k.name != "ipv4"] + ["cold"])
    actions = {}
    for v in result.verdicts:
        action = "tempfail" if v.action == "reply" and v.reply[:1] == b"4" else v.action
        actions[f"{v.kind}:{action}"] = actions.get(f"{v.kind}:{action}", 0) + 1
    return LatencyRow(cache, sessions, len(result.verdicts), result.rate,
                      percentile(judged, 0.5) * 1000, percentile(judged, 0.99) * 1000,
                      (judged[-1] if judged else float("nan")) * 1000, result.errors, actions)


class CountingProxy:
    """TCP proxy to Redis that counts round trips, i.e. times the client waited.

    It holds Redis's replies back until the client has sent nothing for
    HOLD seconds, so a command the client writes while replies are held
    cannot have waited for them: it belongs to the same round trip (a
    pipeline, however redis-py splits it into writes). A client write after
    replies were delivered starts a new one. Slows the client: counting only.
    """
    HOLD = 0.005

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.round_trips = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client, server):
        held, delivered = b"", True
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [],
                                            self.HOLD if held else None)
                if not ready:                       # the client is waiting: deliver
                    client.sendall(held)
                    held, delivered = b"", True
                    continue
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if delivered:
                            with self.lock:
                                self.round_trips += 1
                            delivered = False
                        server.sendall(data)
                    else:
                        held += data
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self):
        self.closed = True
        self.listener.close()


def commandstats(client) -> dict:
    return {name: stats["calls"] for name, stats in client.info("commandstats").items()}


def count_costs(out, inp, redis, dns, repeats: int = 20) -> dict:
    """Per kind: Redis round trips and commands per decision; DNS queries for the
    first message of a sender and for repeats within the TTL."""
    proxy = CountingProxy(redis.port)
    # The decision's own round trips: the journal's one background write per message
    # (tests/integration/test_journal.py counts it) would be counted here too.
    daemon = procs.mx6milter("mx6-count", out, f"unix:{out}/mx6-count.sock",
                             f"redis://127.0.0.1:{proxy.port}/0", dns.nameservers, journal=False).start()
    address = f"unix:{out}/mx6-count.sock"
    costs = {}
    try:
        run_load(address, envelopes(inp, 1, ["ipv4"]), 1)   # connections, script load
        for kind in inputs.KINDS:
            envs = envelopes(inp, 1 + repeats, [kind.name])
            q0 = dns.query_count()
            run_load(address, envs[:1], 1)
            q1 = dns.query_count()
            trips0, cmds0 = proxy.round_trips, commandstats(redis.client())
            run_load(address, envs[1:], 1)
            trips1, cmds1 = proxy.round_trips, commandstats(redis.client())
            q2 = dns.query_count()
            calls = {name: cmds1.get(name, 0) - cmds0.get(name, 0) for name in cmds1}
            calls = {name: n for name, n in calls.items()
                     if n and name not in ("cmdstat_info", "cmdstat_hello", "cmdstat_client|setinfo")}
            costs[kind.name] = {
                "dns_first": q1 - q0,
                "dns_repeat": (q2 - q1) / repeats,
                "redis_round_trips": (trips1 - trips0) / repeats,
                "redis_commands": {name.replace("cmdstat_", ""): n / repeats
                                   for name, n in calls.items()},
            }
    finally:
        daemon.stop()
        proxy.close()
    return costs
