"""Does RDAP delay decisions? Decision time with the RDAP signals on, RDAP server stalled.

    .venv/bin/python -m bench.bench_rdap                  # 300 decisions a mode

Starts redis-server, BIND (tests/data/zones) and a local RDAP server
(tests/support/rdapserver.py) and decides IPv6 messages from greenlist.example
(SPF pass, aligned) in-process with ``Evaluator.evaluate``, in four modes:

``off``        [rdap] off: the baseline
``cached``     registrar and rdap on, the answers cached in Redis
``stalled``    on, nothing cached, the RDAP server holds every request (it never
               answers while the mode runs): each decision misses the cache, and
               the lookup stays queued behind the held one
``failing``    on, nothing cached, the server answers 500 at once

Prints the median and 99th percentile decision time of each mode (ms).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]   # run as a script or with -m
from bench.timing import durations_ms  # noqa: E402
from dnsserver import DnsServer  # noqa: E402
from rdapserver import RdapServer  # noqa: E402
from servers import RedisServer  # noqa: E402

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.dns import Resolver  # noqa: E402
from mx6milter.evaluate import Evaluator  # noqa: E402
from mx6milter.model import Message, Session  # noqa: E402
from mx6milter.store import Store  # noqa: E402

DATA = ROOT / "tests" / "data" / "rdap"
CLIENT = "2001:db8:8::50"
RAW = (b"From: Sender <sender@greenlist.example>\r\nTo: user@example.org\r\nSubject: x\r\n"
       b"Message-ID: <b@greenlist.example>\r\n\r\nHello.\r\n")


def evaluator(redis_url: str, nameservers: str, rdap: str) -> Evaluator:
    config = parse_config(f"[redis]\nurl = {redis_url}\n[dns]\nnameservers = {nameservers}\n"
                          f"[greenlist]\nfcrdns = no\nhistory = no\n{rdap}")
    return Evaluator(config, Store.from_config(config.redis), Resolver.from_config(config.dns))


def decide(ev: Evaluator):
    session = Session(client_ip=CLIENT, helo="mail.example.invalid",
                      mail_from="sender@greenlist.example", recipients=["user@example.org"])
    return ev.evaluate(session, Message(headers=(("From", "Sender <sender@greenlist.example>"),),
                                        raw=RAW))


def timed(ev: Evaluator, count: int) -> dict:
    checks: set = set()

    def seen(outcome):
        checks.update(str(f) for f in outcome.evidence.checks if f.kind in ("registrar", "rdap"))
    times = sorted(durations_ms(lambda: decide(ev), count, warmup=5, each=seen))
    return {"median_ms": round(statistics.median(times), 3),
            "p99_ms": round(times[int(len(times) * 0.99)], 3), "checks": sorted(checks)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mx6-bench-rdap-"))
    redis_server = RedisServer().start()
    dns_server = DnsServer().start()
    results = {}
    try:
        with RdapServer() as server:
            dns, ipv6 = server.write_bootstrap(work)
            on = (f"registrar = yes\nrdap = yes\n[rdap]\nenabled = yes\nbootstrap = {dns}\n"
                  f"ip_bootstrap = {ipv6}\ntimeout = 30\nmin_interval = 0.01\n")
            results["off"] = timed(evaluator(redis_server.url, dns_server.nameservers, ""),
                                   args.count)
            server.route("/domain/greenlist.example", (DATA / "gtld-domain.json").read_bytes())
            server.route(f"/ip/{CLIENT}", (DATA / "rir-network.json").read_bytes())
            warm = evaluator(redis_server.url, dns_server.nameservers, on)
            decide(warm)
            warm.greenlist.rdap.fetcher.flush(30)
            results["cached"] = timed(warm, args.count)
            redis_server.client().flushall()
            server.route("/domain/greenlist.example", b"{}", hold=True)
            server.route(f"/ip/{CLIENT}", b"{}", hold=True)
            stalled = evaluator(redis_server.url, dns_server.nameservers, on)
            results["stalled"] = timed(stalled, args.count)
            results["stalled"]["server_still_holding"] = not server.release.is_set()
            server.release.set()
            stalled.greenlist.rdap.fetcher.flush(60)     # its late answers land before the flush
            server.route("/domain/greenlist.example", b"oops", status=500)
            server.route(f"/ip/{CLIENT}", b"oops", status=500)
            redis_server.client().flushall()
            results["failing"] = timed(evaluator(redis_server.url, dns_server.nameservers, on),
                                       args.count)
    finally:
        dns_server.close()
        redis_server.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
