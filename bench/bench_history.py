"""Redis memory of the greenlist's IPv4 history (mx6milter/history.py).

    .venv/bin/python bench/bench_history.py                 # 100,000 domains
    .venv/bin/python bench/bench_history.py --count 20000

Starts a private redis-server (tests/support/servers.py) and records COUNT distinct
From domains through History.record, the milter's own write (one Lua script
per IPv4 message), each domain on three different days, then reports Redis's
used_memory per domain, the time of one write, and the time of the IPv6
side's lookup (Store.lookup of one domain's history). Domain names are
realistic in length (mean about 14 characters).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from servers import RedisServer  # noqa: E402

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.evidence.history import DAY, History  # noqa: E402
from mx6milter.store import Store  # noqa: E402

TLDS = ("com", "net", "org", "de", "co.uk", "example", "info", "fr", "nl", "io")


def domains(count: int, seed: int = 8) -> list:
    rng = random.Random(seed)
    out = set()
    while len(out) < count:
        label = "".join(rng.choice(string.ascii_lowercase + string.digits)
                        for _ in range(rng.randint(4, 14)))
        sub = rng.random() < 0.2
        out.add((f"mail.{label}" if sub else label) + "." + rng.choice(TLDS))
    return sorted(out)


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args(argv)
    names = domains(args.count)
    server = RedisServer().start()
    try:
        admin = server.client()
        config = parse_config(f"[redis]\nurl = {server.url}\n[greenlist]\nhistory = yes\n")
        store = Store.from_config(config.redis)
        now = [1_800_000_000.0]
        history = History(store, config.greenlist, clock=lambda: now[0])
        history.record("warm.example")             # script loaded, connection open
        admin.delete("mx6:v1:history:ipv4:warm.example")
        before = used_memory(admin)
        write_times = []
        for day in range(3):
            now[0] = 1_800_000_000.0 + day * 7 * DAY
            for name in names:
                started = time.perf_counter()
                history.record(name)
                write_times.append(time.perf_counter() - started)
        after = used_memory(admin)
        lookup_times = []
        for name in names[:2000]:
            started = time.perf_counter()
            hits = store.lookup({"history": History.query(name)})["history"]
            lookup_times.append(time.perf_counter() - started)
            assert hits and hits[0].value.startswith("3 "), (name, hits)
        sample = history.read(names[0])
        result = {
            "domains": args.count,
            "mean_domain_length": round(statistics.mean(len(n) for n in names), 1),
            "redis_version": admin.info("server")["redis_version"],
            "used_memory_bytes": after - before,
            "bytes_per_domain": round((after - before) / args.count, 1),
            "keys": admin.dbsize(),
            "write_ms_median": round(statistics.median(write_times) * 1000, 3),
            "write_ms_p99": round(sorted(write_times)[int(len(write_times) * 0.99)] * 1000, 3),
            "lookup_ms_median": round(statistics.median(lookup_times) * 1000, 3),
            "sample_entry": f"count={sample.count} days={sample.span_days}",
            "ttl_seconds": admin.ttl(f"mx6:v1:history:ipv4:{names[0]}"),
        }
        print(json.dumps(result, indent=2))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
