"""CPU time of counting one decision in the metrics (mx6milter/metrics.py).

    .venv/bin/python bench/bench_metrics.py                 # plain counters (one process)
    .venv/bin/python bench/bench_metrics.py --multiprocess  # worker processes' mode

One "decision" as the daemon counts it: Metrics.decision with the twelve
checks of a typical fallback, six DNS cache hits, one Redis round trip, a
session opened and closed. Prints the CPU time per decision and its share of
a warm decision's CPU (1.7 to 1.9 ms on the 2-core machine: README, Performance).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

WARM_DECISION = 0.0019   # seconds of CPU of a warm decision, the larger of the measured figures
CHECKS = [("session", "ipv6"), ("spf", "fail"), ("dkim", "pass"), ("dmarc", "fail"),
          ("ip", "miss"), ("domain", "miss"), ("addressbook", "miss"), ("fcrdns", "miss"),
          ("network", "miss"), ("asn", "miss"), ("mishandle4xx", "miss"),
          ("greenlist", "insufficient")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--multiprocess", action="store_true",
                        help="prometheus_client's multiprocess mode, as with [milter] processes > 1")
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="mx6-bench-metrics-")
    try:
        if args.multiprocess:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory   # before prometheus_client loads
        from mx6milter.metrics import Metrics
        from mx6milter.model import Action, Decision, Finding, Tier
        metrics = Metrics()
        decision = Decision(Tier.NONE, Action.TEMPFAIL, reasons=("no-positive-evidence",))
        checks = tuple(Finding(kind, result, "detail") for kind, result in CHECKS)

        def one() -> None:
            metrics.decision(decision, checks, 0.002)
            for _ in range(6):
                metrics.dns_cache_hits.inc()
            metrics.redis_seconds.observe(0.0004)
            metrics.sessions.inc()
            metrics.sessions.dec()

        for _ in range(2000):
            one()
        started = time.process_time()
        for _ in range(args.count):
            one()
        per = (time.process_time() - started) / args.count
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    mode = "multiprocess" if args.multiprocess else "one process"
    print(f"{mode}: {per * 1e6:.1f} us CPU per decision counted, {per / WARM_DECISION:.1%} "
          f"of a warm decision ({WARM_DECISION * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
