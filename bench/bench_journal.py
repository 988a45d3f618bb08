"""What the journal (mx6milter/journal.py) costs: the milter's thread, the writer, Redis memory.

    .venv/bin/python bench/bench_journal.py                 # 20,000 fallbacks
    .venv/bin/python bench/bench_journal.py --count 5000

Starts a private redis-server (tests/support/servers.py) and hands a Journal
COUNT fallback decisions as the milter does (Journal.decision: a copy of the
session, one queue append), each from its own /48 with its own Message-ID (the
worst case for the capped sender lists), with fourteen checks as a real
decision has; then the same messages over IPv4 (Journal.ipv4), each found and
counted recovered. Reports the cost of one submit on the milter's thread, the
writer's records per second (one pipelined round trip each, two for a
recovery), and Redis's used_memory after all of it, per decision and in
total under the default [report] limits.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from servers import RedisServer  # noqa: E402

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.evaluate import Outcome  # noqa: E402
from mx6milter.journal import Journal  # noqa: E402
from mx6milter.model import (Action, Decision, Evidence, Finding, Reply, Session,  # noqa: E402
                             SessionClass, Tier)
from mx6milter.store import Store  # noqa: E402

CHECKS = (("session", "ipv6", "2001:db8::1"), ("spf", "fail", "bounce@sender.example"),
          ("dkim", "none", ""), ("dmarc", "fail", "sender.example"), ("ip", "miss", ""),
          ("domain", "miss", ""), ("addressbook", "miss", ""), ("fcrdns", "fail", "no PTR"),
          ("network", "miss", ""), ("asn", "miss", "no ASN for the client"),
          ("mishandle4xx", "miss", ""), ("history", "miss", "sender.example"),
          ("greenlist", "insufficient", "0/1 signals"), ("redis", "ok", ""))


def outcome() -> Outcome:
    reply = Reply("451", "4.7.1", ("Not accepted over IPv6 from this sender; please retry "
                                   "over IPv4",))
    evidence = Evidence(SessionClass.IPV6, checks=tuple(Finding(*c) for c in CHECKS),
                        auth_results="mx.example.org; spf=fail smtp.mailfrom=bounce@sender."
                                     "example; dkim=none; dmarc=fail header.from=sender.example")
    decision = Decision(Tier.NONE, Action.TEMPFAIL, ("no-positive-evidence",), reply)
    return Outcome(evidence, decision, None, 3.2)


def session(number: int) -> Session:
    return Session(client_ip=f"2001:db8:{number >> 16:x}:{number & 0xffff:x}::25",
                   helo=f"mail{number}.sender.example", mail_from="bounce@sender.example",
                   recipients=["alice@example.org", "bob@example.org"],
                   queue_id=f"4Q{number:09X}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args(argv)
    server = RedisServer().start()
    try:
        admin = server.client()
        config = parse_config(f"[redis]\nurl = {server.url}\n[report]\n"
                              f"queue_size = {2 * args.count}\n")
        journal = Journal(Store.from_config(config.redis), config.report)
        before = int(admin.info("memory")["used_memory"])
        result = outcome()
        sessions = [session(n) for n in range(args.count)]
        ids = [(f"<{n}.bench@sender.example>", "Sender <bounce@sender.example>")
               for n in range(args.count)]
        started = time.perf_counter()
        for current, (message_id, header_from) in zip(sessions, ids):
            journal.decision(current, result, message_id, header_from)
        submitted = time.perf_counter()
        assert journal.flush(timeout=600)
        written = time.perf_counter()
        memory = int(admin.info("memory")["used_memory"]) - before
        for current, (message_id, header_from) in zip(sessions, ids):
            journal.ipv4(current, message_id, header_from)
        ipv4_submitted = time.perf_counter()
        assert journal.flush(timeout=600)
        recovered = time.perf_counter()
        out = {
            "decisions": args.count,
            "submit_us_per_decision": round((submitted - started) / args.count * 1e6, 1),
            "writer_decisions_per_s": round(args.count / (written - started)),
            "submit_us_per_ipv4_message": round((ipv4_submitted - written) / args.count * 1e6, 1),
            "writer_recoveries_per_s": round(args.count / (recovered - written)),
            "redis_bytes_per_decision": round(memory / args.count),
            "redis_mb_after_decisions": round(memory / 1e6, 1),
            "recovered": journal.recovered, "failed": journal.failed, "dropped": journal.dropped,
        }
        print(json.dumps(out, indent=2))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
