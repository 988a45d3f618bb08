"""What a DNS whitelist costs one IPv6 decision (mx6milter/evidence/dnswl.py).

    .venv/bin/python bench/bench_dnswl.py                  # 2,000 decisions per case
    .venv/bin/python bench/bench_dnswl.py --count 500

Starts a private BIND (tests/data/zones, list.dnswl.example among them) and
redis-server, and times Evaluator.evaluate, in-process CPU, with ``[dnswl]
zones`` empty and set, for a listed client (trust 2, with TXT: whitelisted)
and an unlisted one (falls back); warm: the resolver's cache already holds
every answer. Also counts the DNS queries the first, cold, decision sends.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]   # run as a script or with -m
from bench.timing import durations_ms  # noqa: E402
from dnsserver import DnsServer  # noqa: E402
from servers import RedisServer  # noqa: E402

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.dns import Resolver  # noqa: E402
from mx6milter.evaluate import Evaluator  # noqa: E402
from mx6milter.model import Message, Session  # noqa: E402
from mx6milter.store import Store  # noqa: E402

RAW = (b"From: Sender <sender@example.net>\r\nTo: user@example.org\r\nSubject: bench\r\n"
       b"Message-ID: <bench@example.net>\r\n\r\nHello.\r\n")
CLIENTS = {"listed": "2001:db8:c::12", "unlisted": "2001:db8:c::30"}


def evaluator(redis_url: str, nameservers: str, zones: str) -> Evaluator:
    config = parse_config(f"[redis]\nurl = {redis_url}\n[dns]\nnameservers = {nameservers}\n"
                          f"[dnswl]\nzones = {zones}\n")
    return Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))


def decide(ev: Evaluator, client: str):
    session = Session(client_ip=client, helo="mail.example.net", mail_from="sender@example.net",
                      recipients=["user@example.org"])
    return ev.evaluate(session, Message(headers=(("From", "Sender <sender@example.net>"),), raw=RAW))


def measure(ev: Evaluator, client: str, count: int) -> dict:
    cold_before = ev.resolver.lookups
    tier = decide(ev, client).decision.tier.value
    cold_queries = ev.resolver.lookups - cold_before
    warm_before = ev.resolver.lookups
    samples = durations_ms(lambda: decide(ev, client), count, clock=time.process_time)
    return {"tier": tier, "cold_queries": cold_queries,
            "warm_queries": ev.resolver.lookups - warm_before,
            "warm_cpu_ms_median": round(statistics.median(samples), 3),
            "warm_cpu_ms_mean": round(statistics.fmean(samples), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    redis, dns = RedisServer().start(), DnsServer().start()
    try:
        results = {}
        for zones in ("", "list.dnswl.example"):
            for name, client in CLIENTS.items():
                ev = evaluator(redis.url, dns.nameservers, zones)
                results[f"{name}, zones={zones or '(none)'}"] = measure(ev, client, args.count)
    finally:
        dns.close()
        redis.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
