"""One command for every benchmark: ``python -m bench [--quick]`` (as root).

Builds its inputs (DKIM key, zones, signed messages, Redis entries), starts
its own redis-server, named, Postfix, mx6milter, do-nothing pymilter,
OpenDKIM and OpenDMARC on loopback, prints the table and writes it, with
the raw figures as JSON, to the output directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import bench_decision, inputs, memory, milterlevel, mta, procs, report
from .milterclient import run_load

PLANS = {
    # sessions -> messages per MTA measurement; milter-level and memory sizes.
    "full": dict(mta_levels={1: 200, 16: 2000, 64: 4000}, rounds=5, cold=1000, decision=300,
                 warm={1: 2000, 16: 10000}, rss_total=200_000, rss_from=20_000,
                 redis_ip=1_000_000, redis_pairs=1_000_000),
    "quick": dict(mta_levels={1: 40, 16: 400, 64: 800}, rounds=3, cold=200, decision=150,
                  warm={1: 400, 16: 2000}, rss_total=20_000, rss_from=2_000,
                  redis_ip=1_000_000, redis_pairs=1_000_000),
    # The smoke test's: every code path, tiny loads.
    "tiny": dict(mta_levels={1: 4, 16: 16}, rounds=1, cold=8, decision=5, warm={1: 8, 16: 16},
                 rss_total=40, rss_from=20, redis_ip=1000, redis_pairs=1000),
}
PARTS = ("decision", "milter", "mta", "memory")
REQUIRED = ("redis-server", "named", "postfix", "smtp-source", "opendkim", "opendmarc",
            "openssl", "ip", "unshare")


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    postfix = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True).stdout.strip()
    git = subprocess.run(["git", "-C", str(procs.ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "postfix": postfix, "git": git or "unknown"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of an hour")
    parser.add_argument("--plan", choices=sorted(PLANS), help=argparse.SUPPRESS)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out", help="output directory (default bench/out/DATE-TIME)")
    args = parser.parse_args(argv)
    plan_name = args.plan or ("quick" if args.quick else "full")
    plan = PLANS[plan_name]
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {sorted(set(parts) - set(PARTS))}")
    if os.geteuid() != 0:
        parser.error("run as root: it adds loopback addresses and starts Postfix")
    missing = [b for b in REQUIRED if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        parser.error(f"missing programs: {', '.join(missing)} (scripts/install.sh installs them)")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or procs.ROOT / "bench" / "out" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)
    for parent in out.parents:     # Postfix's processes run as user postfix
        if not parent.stat().st_mode & 0o001:
            parser.error(f"--out: {parent} is not searchable by other users (Postfix); "
                         f"choose a directory under /tmp or bench/out")
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"plan": plan_name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine(), "command": command.strip(), "loadavg_start": os.getloadavg()}
    log = lambda text: print(text, flush=True)   # noqa: E731
    started = time.monotonic()
    log(f"bench: plan {plan_name}, parts {','.join(parts)}, output {out}")

    inp = inputs.build(out / "inputs", cold_count=2 * plan["cold"])
    redis = procs.RedisServer().start()
    dns = procs.BenchDns(extra_zones=inp.zones, template_dir=out / "inputs").start()
    running: list = []
    try:
        run_parts(parts, plan, out, inp, redis, dns, results, running, log)
    finally:
        for process in running:
            process.stop()
        dns.close()
        redis.close()
    results["seconds"] = round(time.monotonic() - started)
    results["loadavg_end"] = os.getloadavg()
    text = header(results) + report.render(results)
    print("\n" + text)
    (out / "report.rst").write_text(text)
    (out / "results.json").write_text(json.dumps(results, default=_jsonable, indent=1))
    try:
        from . import plot
        for path in plot.draw(json.loads((out / "results.json").read_text()), out):
            log(f"bench: plot {path}")
    except ImportError:
        log("bench: no plots (pip install -e '.[bench]' for matplotlib)")
    log(f"bench: {results['seconds']} s; report in {out / 'report.rst'}")
    return 0


def run_parts(parts, plan, out, inp, redis, dns, results, running, log) -> None:
    from mx6milter.store import Store
    inputs.seed_redis(Store(redis.client()))
    if "decision" in parts:
        log("bench: decision (in process)")
        results["decision"] = bench_decision.run(inp, redis.url, dns.nameservers,
                                                 redis.client(), plan["decision"])
    clients = [k.client for k in inputs.KINDS]
    with procs.LoopbackAddresses(clients):
        if "milter" in parts:
            milter_level(out, inp, plan, redis, dns, results, running, log)
        if "mta" in parts:
            mta_level(out, inp, plan, redis, dns, results, running, log)
    if "memory" in parts:
        log("bench: memory")
        results["rss_points"] = memory.daemon_rss(out, inp, redis, dns, plan["rss_total"],
                                                  log=log)
        results["rss_from"] = plan["rss_from"]
        results["redis_memory"] = memory.redis_memory(
            lambda server: Store(server.client()), plan["redis_ip"], plan["redis_pairs"],
            recipients=max(1, plan["redis_pairs"] // 100), log=log)


def header(results: dict) -> str:
    m = results["machine"]
    return (f"Run {results['date']}, plan {results['plan']}, {results.get('seconds', '?')} s\n"
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
            f"Python {m['python']}, Postfix {m['postfix']}, code {m['git']}\n"
            f"Command: {results['command']}\n"
            f"Load average (1/5/15 min) at start {_load(results.get('loadavg_start'))}, "
            f"at end {_load(results.get('loadavg_end'))}: other work on the machine\n\n")


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "?"


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def milter_level(out, inp, plan, redis, dns, results, running, log) -> None:
    log("bench: milter level")
    address = f"unix:{out}/mx6-level.sock"
    daemon = procs.mx6milter("mx6-level", out, address, redis.url, dns.nameservers).start()
    running.append(daemon)
    cold = milterlevel.cold_envelopes(inp.cold_messages)
    rows = []
    # Cold: a fresh daemon, and every message from a sender it has never seen.
    for sessions, chunk in ((1, cold[:plan["cold"]]), (16, cold[plan["cold"]:])):
        rows.append(milterlevel.measure(address, chunk, sessions, "cold"))
        log(f"  {rows[-1]}")
    run_load(address, milterlevel.envelopes(inp, 40), 4)        # warm the cache
    for sessions, count in plan["warm"].items():
        rows.append(milterlevel.measure(address, milterlevel.envelopes(inp, count), sessions,
                                        "warm"))
        log(f"  {rows[-1]}")
    # The same 16 sessions, offered half the rate one session achieved: latency
    # without the queueing of a saturated daemon.
    rate = 0.5 * next(r.rate for r in rows if r.cache == "warm" and r.sessions == 1)
    rows.append(milterlevel.measure(address, milterlevel.envelopes(inp, plan["warm"][16] // 2),
                                    16, f"warm, paced {rate:.0f}/s", rate=rate))
    log(f"  {rows[-1]}")
    daemon.stop()
    running.remove(daemon)
    # [milter] processes = 2: the same saturated warm load, two GILs.
    address2 = f"unix:{out}/mx6-level-2p.sock"
    daemon = procs.mx6milter("mx6-level-2p", out, address2, redis.url, dns.nameservers,
                             processes=2).start()
    running.append(daemon)
    run_load(address2, milterlevel.envelopes(inp, 40), 4)
    rows.append(milterlevel.measure(address2, milterlevel.envelopes(inp, plan["warm"][16]), 16,
                                    "warm, 2 processes"))
    log(f"  {rows[-1]}")
    daemon.stop()
    running.remove(daemon)
    results["metrics_ab"] = metrics_ab(out, inp, plan, redis, dns, running, log)
    null_address = f"unix:{out}/null-level.sock"
    null = procs.null_milter("null-level", out, null_address).start()
    running.append(null)
    null_rows = []
    for sessions, count in plan["warm"].items():
        null_rows.append(milterlevel.measure(null_address, milterlevel.envelopes(inp, count),
                                             sessions, "warm"))
    null.stop()
    running.remove(null)
    results["milter_rows"], results["null_rows"] = rows, null_rows
    log("bench: costs of one decision")
    results["costs"] = milterlevel.count_costs(out, inp, redis, dns)
    log(f"  {results['costs']}")


def metrics_ab(out, inp, plan, redis, dns, running, log, rounds: int = 3) -> dict:
    """What counting costs: two daemons, [metrics] listen off and on, the same warm
    16-session load on each in turn, ROUNDS times; the median of same-round ratios."""
    daemons = {}
    for name, listen in (("off", ""), ("on", f"127.0.0.1:{procs.free_port()}")):
        address = f"unix:{out}/mx6-metrics-{name}.sock"
        daemons[name] = address
        running.append(procs.mx6milter(f"mx6-metrics-{name}", out, address, redis.url,
                                       dns.nameservers, metrics=listen).start())
        run_load(address, milterlevel.envelopes(inp, 40), 4)
    rates: dict = {"off": [], "on": []}
    for rnd in range(rounds):
        for name in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
            row = milterlevel.measure(daemons[name], milterlevel.envelopes(inp, plan["warm"][16]),
                                      16, f"warm, metrics {name}")
            rates[name].append(row.rate)
            log(f"  {row}")
    for process in running[-2:]:
        process.stop()
    del running[-2:]
    ratios = [on / off for on, off in zip(rates["on"], rates["off"])]
    return {"rates": rates, "ratio": statistics.median(ratios)}


def mta_level(out, inp, plan, redis, dns, results, running, log) -> None:
    log("bench: MTA level")
    tcp, nagle, null_tcp, null_nagle = (procs.free_port() for _ in range(4))
    milters = {
        "null-unix": procs.null_milter("null-unix", out, f"unix:{out}/null.sock"),
        "null-tcp": procs.null_milter("null-tcp", out, f"inet:{null_tcp}@127.0.0.1",
                                      nodelay=True),
        "null-tcp-nagle": procs.null_milter("null-tcp-nagle", out,
                                            f"inet:{null_nagle}@127.0.0.1"),
        "mx6-unix": procs.mx6milter("mx6-unix", out, f"unix:{out}/mx6.sock", redis.url,
                                    dns.nameservers),
        "mx6-unix-2p": procs.mx6milter("mx6-unix-2p", out, f"unix:{out}/mx6-2p.sock", redis.url,
                                       dns.nameservers, processes=2),
        "mx6-tcp": procs.mx6milter("mx6-tcp", out, f"inet:{tcp}@127.0.0.1", redis.url,
                                   dns.nameservers),
        "mx6-tcp-nagle": procs.mx6milter("mx6-tcp-nagle", out, f"inet:{nagle}@127.0.0.1",
                                         redis.url, dns.nameservers, nagle=True),
        "opendkim": procs.opendkim(out, out / "inputs" / "testkeys"),
        "opendmarc": procs.opendmarc(out, procs.BenchDns.PORT53_ADDRESS),
    }
    for process in milters.values():
        running.append(process.start())
    listeners = {
        "none": "",
        "null-unix": f"unix:{out}/null.sock",
        "null-tcp": f"inet:127.0.0.1:{null_tcp}",
        "null-tcp-nagle": f"inet:127.0.0.1:{null_nagle}",
        "mx6-unix": f"unix:{out}/mx6.sock",
        "mx6-unix-2p": f"unix:{out}/mx6-2p.sock",
        "mx6-tcp": f"inet:127.0.0.1:{tcp}",
        "mx6-tcp-nagle": f"inet:127.0.0.1:{nagle}",
        "opendkim+opendmarc": f"unix:{out}/opendkim.sock, unix:{out}/opendmarc.sock",
    }
    interfaces = ["127.0.0.1", "::1"] + [k.client for k in inputs.KINDS if ":" in k.client]
    postfix = procs.BenchPostfix(out / "postfix", interfaces, listeners)
    try:
        postfix.start()
        results["mta_samples"] = mta.run(postfix, inp, plan["mta_levels"], plan["rounds"],
                                         log=log)
        results["mta_levels"] = list(plan["mta_levels"])
        results["mta_rounds"] = plan["rounds"]
    finally:
        postfix.stop()


if __name__ == "__main__":
    sys.exit(main())
