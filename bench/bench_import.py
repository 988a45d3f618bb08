"""How long ``mx6ctl import`` takes for big lists, what Redis memory they cost,
and what the milter's lookups see meanwhile.

    .venv/bin/python bench/bench_import.py              # 1,000,000 of each (a few minutes)
    .venv/bin/python bench/bench_import.py --count 100000

Starts a private redis-server (tests/support/servers.py), writes the input files
(1,000,000 distinct IPv6 prefixes; 1,000,000 addressbook pairs, 10,000
recipients x 100 senders, grouped by recipient as an export is), and runs the
real command line (``python -m mx6milter.ctl``) for: a first import with
``--replace``, the same file replaced again (a feed refresh: old and new list
coexist until the swap), and, for prefixes, a plain add of the same file.
Meanwhile a thread does the milter's lookup (Store.lookup: 129 prefixes of one
address, one addressbook pair) every 5 ms and samples Redis memory; the
longest single Redis command comes from SLOWLOG. Goal: under 60 s each.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from servers import RedisServer  # noqa: E402

from mx6milter.config import RedisSection  # noqa: E402
from mx6milter.store import Store  # noqa: E402
from mx6milter.prefixes import ip_candidates  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable


def write_prefixes(path: Path, count: int, seed: int = 6) -> None:
    """Distinct prefixes in 2000::/3: mostly /48, some /64 and single addresses."""
    rng = random.Random(seed)
    seen = set()
    lines = []
    while len(lines) < count:
        length = rng.choices((48, 64, 128), (70, 20, 10))[0]
        value = (0x2 << 125) | rng.getrandbits(125)
        network = ipaddress.IPv6Network(((value >> (128 - length)) << (128 - length), length))
        if network not in seen:
            seen.add(network)
            lines.append(str(network))
    path.write_text("\n".join(lines) + "\n")


def write_pairs(path: Path, count: int, recipients: int) -> None:
    per = max(1, count // recipients)
    with path.open("w") as handle:
        written = 0
        for r in range(recipients):
            rows = [f"user{r}@example.org contact{s}@domain{(r * 7 + s) % 5000}.example\n"
                    for s in range(per) if written + s < count]
            handle.writelines(rows)
            written += len(rows)
            if written >= count:
                break


class Watcher(threading.Thread):
    """The milter's lookups and Redis memory, sampled during an import."""

    def __init__(self, store: Store):
        super().__init__(daemon=True)
        self.store = store
        self.stop = threading.Event()
        self.latencies = []
        self.errors = 0
        self.peak_memory = 0
        self.queries = {"ip": [("", f) for f in ip_candidates(ipaddress.IPv6Address("2001:db8::1"))],
                        "ab": [("user1@example.org", "contact1@domain8.example")]}

    def run(self):
        last_memory = 0.0
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.store.lookup(self.queries)
                self.latencies.append((time.perf_counter() - started) * 1000)
            except Exception:
                self.errors += 1
                self.store._down_until = 0
            if time.monotonic() - last_memory > 0.2:
                last_memory = time.monotonic()
                try:
                    used = self.store.client.info("memory")["used_memory"]
                    self.peak_memory = max(self.peak_memory, used)
                except Exception:
                    pass
            time.sleep(0.005)


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def command_name(store: Store, command) -> str:
    words = (command.decode("utf-8", "replace") if isinstance(command, bytes) else str(command)).split()
    scripts = {store._load_script.sha: "load batch (Lua)", store._swap_script.sha: "swap (Lua)"}
    if len(words) > 1 and words[0].upper() == "EVALSHA":
        return scripts.get(words[1], "EVALSHA lookup")
    return words[0] if words else ""


def settle(client, timeout: float = 30.0) -> None:
    """Wait until Redis has freed what UNLINK handed to its background thread."""
    deadline = time.monotonic() + timeout
    while client.info("memory").get("lazyfree_pending_objects", 0) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_import(config: Path, kind: str, path: Path, store: Store, extra=()) -> dict:
    client = store.client
    client.slowlog_reset()
    before = client.info("memory")["used_memory"]
    watcher = Watcher(store)
    watcher.start()
    started = time.monotonic()
    process = subprocess.run([PYTHON, "-m", "mx6milter.ctl", "-c", str(config), "import", kind,
                              str(path), "--source", "bench", "-q", *extra],
                             capture_output=True, text=True)
    elapsed = time.monotonic() - started
    watcher.stop.set()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"mx6ctl import {kind} failed: {process.stderr}")
    settle(client)
    after = client.info("memory")["used_memory"]
    slow = client.slowlog_get(1000)
    longest = max(slow, key=lambda e: e["duration"]) if slow else None
    return {
        "kind": kind, "options": " ".join(extra) or "(add)", "seconds": round(elapsed, 1),
        "summary": json.loads(process.stdout),
        "memory_before_mib": round(before / 1048576, 1),
        "memory_after_mib": round(after / 1048576, 1),
        "memory_peak_sampled_mib": round(max(watcher.peak_memory, after) / 1048576, 1),
        "lookups": len(watcher.latencies), "lookup_errors": watcher.errors,
        "lookup_p50_ms": round(percentile(watcher.latencies, 0.5), 2),
        "lookup_p99_ms": round(percentile(watcher.latencies, 0.99), 2),
        "lookup_max_ms": round(max(watcher.latencies, default=float("nan")), 2),
        "longest_redis_command_ms": round(longest["duration"] / 1000, 1) if longest else 0.0,
        "longest_redis_command": command_name(store, longest["command"]) if longest else "",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="the results as JSON")
    args = parser.parse_args(argv)

    redis_server = RedisServer().start()
    work = Path(tempfile.mkdtemp(prefix="mx6-bench-import-"))
    try:
        client = redis_server.client()
        client.config_set("slowlog-log-slower-than", 1000)   # µs: commands over 1 ms
        client.config_set("slowlog-max-len", 10000)
        config = work / "mx6.conf"
        config.write_text(f"[redis]\nurl = {redis_server.url}\n")
        store = Store.from_config(RedisSection(url=redis_server.url, timeout=5.0))
        empty = client.info("memory")["used_memory"]
        t = time.monotonic()
        write_prefixes(work / "prefixes.txt", args.count)
        write_pairs(work / "pairs.txt", args.count, args.recipients)
        print(f"inputs written in {time.monotonic() - t:.1f} s "
              f"({(work / 'prefixes.txt').stat().st_size >> 20} MiB, "
              f"{(work / 'pairs.txt').stat().st_size >> 20} MiB)", file=sys.stderr)
        results = []
        for kind, name, runs in (("ip", "prefixes.txt", (["--replace"], ["--replace"], [])),
                                 ("addressbook", "pairs.txt", (["--replace"], ["--replace"]))):
            for extra in runs:
                results.append(run_import(config, kind, work / name, store, extra))
                print(f"{kind} {' '.join(extra) or '(add)'}: {results[-1]['seconds']} s",
                      file=sys.stderr)
        memory_total = client.info("memory")["used_memory"] - empty
    finally:
        redis_server.close()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()

    if args.json:
        print(json.dumps({"count": args.count, "recipients": args.recipients, "results": results,
                          "memory_for_both_mib": round(memory_total / 1048576, 1)}, indent=2))
        return 0
    print(f"{args.count:,} entries per kind; addressbook: {args.recipients:,} recipients\n")
    header = (f"{'kind':<12} {'run':<10} {'s':>6} {'added':>9} {'present':>9} {'removed':>8} "
              f"{'MiB after':>9} {'MiB peak':>8} {'lookup p50/p99/max ms':>22} {'longest cmd ms':>14}"
              "  longest cmd")
    print(header)
    print("-" * len(header))
    for r in results:
        s = r["summary"]
        lookups = f"{r['lookup_p50_ms']}/{r['lookup_p99_ms']}/{r['lookup_max_ms']}"
        print(f"{r['kind']:<12} {r['options']:<10} {r['seconds']:>6} {s['added']:>9} "
              f"{s['present']:>9} {s['removed']:>8} {r['memory_after_mib']:>9} "
              f"{r['memory_peak_sampled_mib']:>8} {lookups:>22} {r['longest_redis_command_ms']:>14}"
              f"  {r['longest_redis_command']}")
    print(f"\nRedis memory for both lists: {memory_total / 1048576:.1f} MiB; "
          f"lookup errors during imports: {sum(r['lookup_errors'] for r in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
