"""Warm decision CPU per kind, in process: what one IPv6 message costs mx6milter.

    .venv/bin/python -m bench.bench_decision                  # 300 decisions per kind and round
    .venv/bin/python -m bench.bench_decision --count 1000
    .venv/bin/python -m bench.bench_decision --profile 900    # cProfile of 900 decisions

Builds the bench's inputs (bench/inputs.py: a 2048-bit DKIM key, the zones, the
signed ~4 KB messages of the kinds ip, addrbook and unknown), starts a private
redis-server and BIND, seeds Redis as ``python -m bench`` does, and builds the
daemon's evaluator (``service.build_evaluator``) with the evidence sources of the
later issues switched on: ``[dnswl] zones``, ``[arc] trusted_sealers``, the
``baseline`` and IPv4 ``history`` signals, addressbook learning. (RDAP stays off:
its lookups would leave the machine.) The first decision of each kind warms the
resolver's cache; then the kinds take turns, seven rounds of COUNT decisions each,
so a busy neighbour slows all of them alike. Prints the median process CPU per
decision, per kind, the Redis server's CPU per decision (INFO cpu), and the Redis
commands run server-side per decision (INFO commandstats before and after one
decision), as JSON.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mx6milter.config import parse_config
from mx6milter.model import MessageBuilder, Session
from mx6milter.service import build_evaluator
from mx6milter.store import Store

from . import inputs, procs

JUDGED = ("ip", "addrbook", "unknown")


def config_text(redis_url: str, nameservers: str) -> str:
    return f"""\
[redis]
url = {redis_url}
[policy]
authserv_id = {inputs.AUTHSERV_ID}
[dns]
nameservers = {nameservers}
[dnswl]
zones = list.dnswl.example
[arc]
trusted_sealers = list.example
[greenlist]
baseline = yes
[addressbook]
learn = yes
"""


def as_message(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    builder = MessageBuilder(50 << 20)
    for line in head.replace(b"\r\n ", b"\n ").replace(b"\r\n\t", b"\n\t").split(b"\r\n"):
        name, _, value = line.partition(b":")
        builder.add_header(name.decode(), value)
    builder.add_body(body)
    return builder.build()


def cases(inp) -> dict:
    """kind -> (session, message)."""
    out = {}
    for name in JUDGED:
        kind = inp.kind(name)
        session = Session(client_ip=kind.client, helo=f"mail.{kind.domain}",
                          mail_from=kind.sender, recipients=[inputs.RECIPIENT])
        out[name] = (session, as_message(inp.messages[name]))
    return out


def commands_run(client) -> int:
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items()
               if k not in ("cmdstat_info",))


def measure(evaluator, work: dict, count: int, redis_client) -> dict:
    tiers, commands = {}, {}
    for name, (session, msg) in work.items():
        tiers[name] = evaluator.evaluate(session, msg).decision.tier.value  # warms the caches
        before = commands_run(redis_client)
        evaluator.evaluate(session, msg)
        commands[name] = commands_run(redis_client) - before
    rounds: dict = {name: [] for name in work}
    server: dict = {name: [] for name in work}
    for _ in range(7):
        for name, (session, msg) in work.items():
            started, server_started = time.process_time(), server_cpu(redis_client)
            for _ in range(count):
                evaluator.evaluate(session, msg)
            rounds[name].append((time.process_time() - started) * 1000 / count)
            server[name].append((server_cpu(redis_client) - server_started) * 1000 / count)
    return {name: {"tier": tiers[name], "warm_cpu_ms": round(statistics.median(rounds[name]), 3),
                   "redis_server_cpu_ms": round(statistics.median(server[name]), 3),
                   "redis_commands": commands[name]} for name in work}


def server_cpu(client) -> float:
    """Seconds of CPU the Redis server has used (its own count, INFO cpu)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def profile(evaluator, work: dict, count: int) -> None:
    for session, msg in work.values():
        evaluator.evaluate(session, msg)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(count):
        session, msg = list(work.values())[i % len(work)]
        evaluator.evaluate(session, msg)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(45)


def run(inp, redis_url: str, nameservers: str, redis_client, count: int) -> dict:
    """``measure`` on servers already serving the bench's zones and seeded with its data
    (``python -m bench``'s part "decision", and ``main`` below)."""
    evaluator = build_evaluator(parse_config(config_text(redis_url, nameservers)))
    return measure(evaluator, cases(inp), count, redis_client)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print a cProfile of N warm decisions instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-decision-") as tmp:
        inp = inputs.build(Path(tmp) / "inputs")
        redis = procs.RedisServer().start()
        dns = procs.BenchDns(extra_zones=inp.zones, template_dir=Path(tmp) / "inputs").start()
        try:
            inputs.seed_redis(Store(redis.client()))
            if args.profile:
                profile(build_evaluator(parse_config(config_text(redis.url, dns.nameservers))),
                        cases(inp), args.profile)
                return 0
            print(json.dumps(run(inp, redis.url, dns.nameservers, redis.client(), args.count),
                             indent=2))
        finally:
            dns.close()
            redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
