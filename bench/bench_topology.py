"""Sizing: Redis memory per million entries of each kind, and the decision's Redis lookup
(round trips, latency), on one Redis, behind Sentinel, and on a 3-primary Redis Cluster.

    .venv/bin/python bench/bench_topology.py                 # 1,000,000 of each kind, ~5 min
    .venv/bin/python bench/bench_topology.py --entries 100000 --lookups 500

Starts its own servers (tests/support/servers.py: redis-server; a primary, a replica and
three sentinels; three Cluster primaries made one by ``redis-cli --cluster create``) and
writes through the Store (``Store.load``, what ``mx6ctl import`` uses). Memory is Redis's
``used_memory`` added by each kind (the sum over the Cluster's primaries), per entry and
per million. The lookup is ``Store.lookup`` with the queries of one IPv6 decision: the
129 prefix candidates of the client for ip, green, asn and mishandle4xx, two domains,
the From domain's history, and one addressbook pair per recipient (1 and 10
recipients); round trips are counted per connection (servers.count_round_trips).
"""
from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from servers import RedisClusterSet, RedisServer, SentinelSet, count_round_trips  # noqa: E402

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.prefixes import ip_candidates, ip_field  # noqa: E402
from mx6milter.store import Store  # noqa: E402

SENDERS_PER_RECIPIENT = 100
CLIENT = ipaddress.IPv6Address("2001:db8:4000::25")


def kinds(count: int) -> dict:
    """kind -> (source, generator of (suffix, field, value)) with COUNT entries each."""
    base = int(ipaddress.ip_address("2001:db8:4000::"))
    recipients = max(1, count // SENDERS_PER_RECIPIENT)
    return {
        "ip": ("feed", lambda: (("", ip_field(ipaddress.IPv6Network((base + (i << 80), 48))), "0")
                                for i in range(count))),
        "domain": ("feed", lambda: (("", f"d{i}.partner{i % 977}.example", "dmarc 0")
                                    for i in range(count))),
        "ab": ("crm", lambda: ((f"user{i // SENDERS_PER_RECIPIENT}@example.org",
                                f"contact{i}@sender{i % 997}.example", "0")
                               for i in range(count))),
        "history": ("ipv4", lambda: ((f"h{i}.sender{i % 991}.example", "v",
                                      "5 20000 20010 1900000000") for i in range(count))),
    }, recipients


def used_memory(store: Store) -> int:
    return int(store.used_memory() or 0)


def measure_memory(store: Store, count: int, log) -> dict:
    out = {}
    plan, _ = kinds(count)
    for kind, (source, entries) in plan.items():
        before = used_memory(store)
        started = time.perf_counter()
        store.load(kind, source, entries(), batch=2000)
        added = used_memory(store) - before
        out[kind] = added
        log(f"  {kind:8} {count:>9,} entries: {added / 2**20:8.1f} MiB, {added / count:6.1f} B each, "
            f"{time.perf_counter() - started:5.1f} s")
    return out


def decision_queries(recipients: list) -> dict:
    candidates = [("", field) for field in ip_candidates(CLIENT)]
    return {"ip": candidates, "green": candidates, "asn": candidates,
            "mishandle4xx": candidates + [("", "mail.sender1.example")],
            "domain": [("", "sender1.example"), ("", "example.net")],
            "history": [("h1.sender1.example", "v")],
            "ab": [(rcpt, "contact1@sender1.example") for rcpt in recipients]}


def measure_lookups(store: Store, lookups: int, recipients: int) -> dict:
    rcpts = [f"user{n * 37}@example.org" for n in range(recipients)]
    queries = decision_queries(rcpts)
    for _ in range(20):
        store.lookup(queries)                 # warm: connections, scripts, slots, sources
    with count_round_trips() as sent:
        store.lookup(queries)
    times = []
    for _ in range(lookups):
        started = time.perf_counter()
        store.lookup(queries)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"round_trips": sum(sent.values()), "servers": len(sent),
            "p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


def run(name: str, redis_lines: str, count: int, lookups: int, log) -> dict:
    """Load COUNT entries of each kind, then time the decision's lookup."""
    store = Store.from_config(parse_config(redis_lines + "timeout = 30\n").redis)
    store.client.flushall()
    log(f"{name}:")
    result: dict = {"memory": measure_memory(store, count, log)}
    if store.cluster:     # where it went: the whitelists' slot on one shard, addressbooks spread
        info = store.client.info("memory", target_nodes=store.client.PRIMARIES)
        result["nodes"] = sorted(int(node["used_memory"]) for node in info.values())
        log("  used_memory per primary: " + ", ".join(f"{m / 2**20:.1f} MiB" for m in result["nodes"]))
    for recipients in (1, 10):
        result[f"lookup_{recipients}"] = found = measure_lookups(store, lookups, recipients)
        log(f"  lookup, {recipients:2} recipients: {found['round_trips']} round trips to "
            f"{found['servers']} servers, p50 {found['p50_ms']:.2f} ms, p99 {found['p99_ms']:.2f} ms")
    return result


def table(results: dict, count: int) -> str:
    rows = []
    for name, result in results.items():
        memory = " ".join(f"{kind} {result['memory'][kind] / count * 1e6 / 2**20:.0f}"
                          for kind in result["memory"])
        one, ten = result["lookup_1"], result["lookup_10"]
        rows.append(f"{name:22}  {memory:44}  {one['round_trips']} / {ten['round_trips']:<4}  "
                    f"{one['p50_ms']:.2f} / {ten['p50_ms']:.2f}    {one['p99_ms']:.2f} / {ten['p99_ms']:.2f}")
    head = (f"{'topology':22}  {'MiB per million entries':44}  {'RTs':9}  {'p50 ms':13}  p99 ms\n"
            f"{'':22}  {'':44}  {'1 / 10 recipients':37}")
    return head + "\n" + "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="per kind")
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args(argv)
    results = {}
    single = RedisServer().start()
    try:
        results["one Redis"] = run("one Redis", f"[redis]\nurl = {single.url}\n", args.entries,
                                   args.lookups, print)
    finally:
        single.close()
    sentinels = SentinelSet().start()
    try:
        lines = f"[redis]\nsentinels = {sentinels.sentinels}\nservice_name = {sentinels.service}\n"
        # the same data as one Redis would hold (the memory of each node is one Redis's);
        # fewer entries, as the lookups' cost does not depend on the lists' length
        small = min(args.entries, 20_000)
        results["Sentinel"] = run("Sentinel", lines, small, args.lookups, print)
        results["Sentinel, replica reads"] = run("Sentinel, replica reads",
                                                 lines + "read_from_replicas = yes\n", small,
                                                 args.lookups, print)
    finally:
        sentinels.close()
    cluster = RedisClusterSet().start()
    try:
        results["Cluster, 3 primaries"] = run("Cluster, 3 primaries",
                                              f"[redis]\ncluster = {cluster.seeds}\n",
                                              args.entries, args.lookups, print)
    finally:
        cluster.close()
    for name in ("Sentinel", "Sentinel, replica reads"):
        results[name]["memory"] = results["one Redis"]["memory"]     # each node: one Redis's
    print()
    print(table(results, args.entries))
    nodes = results["Cluster, 3 primaries"]["nodes"]
    print("\nCluster used_memory per primary after the load: "
          + ", ".join(f"{m / 2**20:.1f} MiB" for m in nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
