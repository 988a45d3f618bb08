"""CPU cost of ARC from trusted sealers (mx6milter/evidence/arc.py) per judged message.

    .venv/bin/python bench/bench_arc.py                 # 300 decisions each way
    .venv/bin/python bench/bench_arc.py --count 1000

Starts a private redis-server and BIND (tests/support), generates a DKIM key for
example.com and ARC keys for a list and a provider, and builds the forwarded message
of tests/integration/test_arc_chains.py: signed by example.com, footed and sealed by
the list, sealed again by the provider (two ARC sets). Then it times warm decisions
(Evaluator.evaluate, DNS answers cached after the first) of that message three ways:
[arc] off, the provider untrusted (the chain's latest seal is read, nothing verified),
and both sealers trusted (the whole chain verified, the records read). Prints the
process CPU time per decision, median of seven rounds, as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from dkimkeys import ArcSealer, DkimKeys, message  # noqa: E402
from dnsserver import DnsServer  # noqa: E402
from servers import RedisServer  # noqa: E402

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.dns import Resolver  # noqa: E402
from mx6milter.evaluate import Evaluator  # noqa: E402
from mx6milter.model import MessageBuilder, Session  # noqa: E402
from mx6milter.store import Store  # noqa: E402

CASES = {"arc off": "", "untrusted": "list.example", "trusted": "list.example provider.example"}


def forwarded(keys: DkimKeys, sealers: dict) -> bytes:
    signed = keys.sign(message(), "example.com", "rsa")
    footed = signed.replace(b"The figures.\r\n", b"The figures.\r\n-- \r\nlist footer\r\n")
    once = sealers["list.example"].seal(footed, "dkim=pass header.d=example.com")
    return sealers["provider.example"].seal(once, "dkim=fail header.d=example.com; arc=pass")


def as_message(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    builder = MessageBuilder(50 << 20)
    for line in head.replace(b"\r\n ", b"\n ").split(b"\r\n"):
        name, _, value = line.partition(b":")
        builder.add_header(name.decode(), value)
    builder.add_body(body)
    return builder.build()


def per_decision_ms(evaluators: dict, msg, count: int) -> tuple:
    """({case: median CPU ms per decision}, {case: the decision's check of the chain}).
    The cases take turns, round by round, so a busy neighbour slows all of them alike."""
    session = Session(client_ip="2001:db8:99::1", helo="mail.list.example",
                      mail_from="list-bounces@list.example", recipients=["user@example.org"])
    checks = {}
    for case, evaluator in evaluators.items():
        outcome = evaluator.evaluate(session, msg)       # warms the DNS cache
        checks[case] = next((str(f) for f in outcome.evidence.checks if f.kind == "arc"), "")
    rounds: dict = {case: [] for case in evaluators}
    for _ in range(7):
        for case, evaluator in evaluators.items():
            started = time.process_time()
            for _ in range(count):
                evaluator.evaluate(session, msg)
            rounds[case].append((time.process_time() - started) * 1000 / count)
    return {case: round(statistics.median(times), 3) for case, times in rounds.items()}, checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args(argv)
    keys = DkimKeys.generate()
    sealers = {name: ArcSealer.generate(name) for name in ("list.example", "provider.example")}
    dns = DnsServer(values=keys.zone_values(),
                    extra_zones={name: s.zone() for name, s in sealers.items()}).start()
    redis = RedisServer().start()
    try:
        msg = as_message(forwarded(keys, sealers))
        evaluators = {}
        for case, trusted in CASES.items():
            config = parse_config(f"[redis]\nurl = {redis.url}\n[dns]\nnameservers = {dns.nameservers}\n"
                                  f"[arc]\ntrusted_sealers = {trusted}\n")
            evaluators[case] = Evaluator(config, Store.from_config(config.redis),
                                         Resolver.from_config(config.dns))
        out, checks = per_decision_ms(evaluators, msg, args.count)
        print(json.dumps({"cpu_ms_per_decision": out, "arc_check": checks, "count": args.count,
                          "sets": 2, "message_bytes": len(msg.raw)}))
    finally:
        redis.close()
        dns.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
