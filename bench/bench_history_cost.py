"""What the IPv4 history ([greenlist] history) costs per IPv4 message.

    .venv/bin/python -m bench.bench_history_cost                 # 400 messages a mode
    .venv/bin/python -m bench.bench_history_cost --count 1000

Starts a private redis-server and BIND (tests/support) serving the bench's zones
(bench/inputs.py: a 2048-bit RSA DKIM key, SPF, DMARC) and drives the milter
in-process (tests/support/harness.py, pymilter's TestCtx) with the bench's ~4 KB
DKIM-signed IPv4 message from 127.0.0.1, in three modes:

``off``          history = no: the milter accepts at the end of the headers
``every``        history = yes, every message of the domain learnt from (its body
                 read, SPF, DKIM and DMARC evaluated in the background, one
                 Redis write): the cost before the per-domain-and-day dedupe,
                 and still the cost of a domain's first messages of a day
``saturated``    history = yes, the domain already counted today and at its
                 threshold: the milter reads the From header and accepts at the
                 end of the headers, like ``off``

For each: the message path's wall time per message (the callbacks, as the MTA
waits for them), the process's CPU time per message including the background
thread, and Redis commands per message (those run inside the Lua script
included; one round trip). Then what a day's mix costs: how many of the
messages of a Zipf-distributed stream of From domains are read (a domain's
first day: its first history_min_messages = 5; later days: its first one).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from dnsserver import DnsServer  # noqa: E402
from harness import run_milter  # noqa: E402
from servers import RedisServer  # noqa: E402

from bench import inputs  # noqa: E402
from mx6milter.config import parse_config  # noqa: E402
from mx6milter.dns import Resolver  # noqa: E402
from mx6milter.evaluate import Evaluator  # noqa: E402
from mx6milter.store import Store  # noqa: E402

MODES = {
    "off": "history = no\n",
    "every": "history = yes\nhistory_min_messages = 1000000000\n",
    "saturated": "history = yes\nhistory_min_messages = 1\n",
}


def redis_commands(client) -> int:
    return sum(v["calls"] for v in client.info("commandstats").values())


def measure(mode: str, count: int, redis_url: str, nameservers: str, inp) -> dict:
    config = parse_config(f"[redis]\nurl = {redis_url}\n[dns]\nnameservers = {nameservers}\n"
                          f"[greenlist]\n{MODES[mode]}")
    evaluator = Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))
    kind = inp.kind("ipv4")
    raw = inp.messages["ipv4"]
    recorder = evaluator.greenlist.recorder

    def one():
        return run_milter(evaluator, raw, client_ip=kind.client, helo=f"mail.{kind.domain}",
                          mail_from=kind.sender, rcpts=(inputs.RECIPIENT,))
    for _ in range(5):        # warm: DNS cache, scripts loaded, the domain counted
        one()
    if recorder:
        recorder.flush(60)
    admin = evaluator.store.client
    calls = redis_commands(admin)
    cpu, path = time.process_time(), 0.0
    stages = set()
    for _ in range(count):
        started = time.perf_counter()
        result = one()
        path += time.perf_counter() - started
        stages.add(result.stage)
    if recorder:
        assert recorder.flush(300)
    cpu = time.process_time() - cpu
    commands = redis_commands(admin) - calls - 1      # less this INFO
    return {"mode": mode, "messages": count, "stage": "/".join(sorted(stages)),
            "path_ms": round(path / count * 1000, 3), "cpu_ms": round(cpu / count * 1000, 3),
            "redis_commands": round(commands / count, 2),
            "recorded": recorder.recorded if recorder else 0}


def zipf_mix(messages: int, domains: int, threshold: int, seed: int = 13) -> dict:
    """Of a day's MESSAGES from DOMAINS From domains (Zipf, s=1), how many are learnt
    from when a domain is skipped once counted THRESHOLD times that day."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(domains)]
    seen: dict = {}
    learnt = 0
    for domain in rng.choices(range(domains), weights, k=messages):
        if seen.get(domain, 0) < threshold:
            learnt += 1
            seen[domain] = seen.get(domain, 0) + 1
    return {"messages": messages, "domains": domains, "threshold": threshold,
            "learnt": learnt, "learnt_share": round(learnt / messages, 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mx6-bench-history-"))
    inp = inputs.build(work / "inputs")
    redis_server = RedisServer().start()
    dns_server = DnsServer(extra_zones=inp.zones).start()
    try:
        rows = [measure(mode, args.count, redis_server.url, dns_server.nameservers, inp)
                for mode in MODES]
    finally:
        dns_server.close()
        redis_server.close()
    # threshold 5: a domain's first day (history_min_messages); 1: every later day
    mixes = [zipf_mix(100_000, domains, threshold) for domains in (1_000, 10_000, 50_000)
             for threshold in (5, 1)]
    print(json.dumps({"modes": rows, "day_mix": mixes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
