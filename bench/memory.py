"""Memory: the daemon's RSS under a long warm load; Redis with big lists; large messages.

``python -m bench.memory --large`` (root not needed) measures the daemon's RSS
around CONCURRENT large DKIM-signed IPv6 messages sent at once over the milter
protocol, for each configuration given (another commit's tree with --code, a
[milter] max_buffered_bytes with --budget), and the peak copies judging one
message makes in-process (tracemalloc).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import subprocess
import threading
import time
from pathlib import Path

from . import inputs, procs
from .milterclient import Envelope, run_load, send_one
from .milterlevel import envelopes


def daemon_rss(out, inp, redis, dns, total: int, samples: int = 10, sessions: int = 16,
               log=print) -> list:
    """(messages sent, RSS kB) after every TOTAL/SAMPLES messages of the mix."""
    daemon = procs.mx6milter("mx6-memory", out, f"unix:{out}/mx6-memory.sock", redis.url,
                             dns.nameservers, level="warning").start()
    address = f"unix:{out}/mx6-memory.sock"
    step = total // samples
    points = [(0, daemon.rss_kb())]
    envs = envelopes(inp, step)
    try:
        sent = 0
        while sent < total:
            started = time.perf_counter()
            result = run_load(address, envs, sessions)
            if result.errors:
                raise RuntimeError(f"{result.errors} milter errors under load; see {daemon.log_path}")
            sent += step
            points.append((sent, daemon.rss_kb()))
            log(f"  memory: {sent:>7} messages, RSS {points[-1][1]} kB "
                f"({step / (time.perf_counter() - started):.0f} msg/s)")
    finally:
        daemon.stop()
    return points


def redis_memory(store_factory, ip_entries: int, pairs: int, recipients: int = 10000,
                 batch: int = 20000, log=print) -> dict:
    """used_memory of an empty Redis, then with IP_ENTRIES prefixes and PAIRS
    addressbook pairs (PAIRS/RECIPIENTS senders per recipient) loaded."""
    server = procs.RedisServer().start()
    try:
        store = store_factory(server)
        client = server.client()
        before = client.info("memory")["used_memory"]
        from mx6milter.prefixes import ip_field
        base = int(ipaddress.ip_address("2001:db8:4000::"))
        started = time.perf_counter()
        for start in range(0, ip_entries, batch):
            store.add("ip", "feed", [("", ip_field(ipaddress.IPv6Network((base + (i << 64), 64))),
                                      "0") for i in range(start, min(ip_entries, start + batch))])
        after_ip = client.info("memory")["used_memory"]
        for start in range(0, pairs, batch):
            store.add("ab", "local", [(f"user{i % recipients}@example.org",
                                       f"contact{i // recipients}.{i}@sender{i % 997}.example", "0")
                                      for i in range(start, min(pairs, start + batch))])
        after = client.info("memory")
        log(f"  redis: loaded {ip_entries} prefixes and {pairs} pairs in "
            f"{time.perf_counter() - started:.0f} s")
        return {"ip_entries": ip_entries, "pairs": pairs, "recipients": recipients,
                "empty": before, "ip_bytes": after_ip - before,
                "ab_bytes": after["used_memory"] - after_ip,
                "used_memory": after["used_memory"], "rss": after["used_memory_rss"]}
    finally:
        server.close()


def large_message(inp_dir: Path, size: int) -> tuple:
    """(zones, signed message of about SIZE bytes, the key's TXT record): the "unknown"
    sender, relaxed/relaxed."""
    kind = next(k for k in inputs.KINDS if k.name == "unknown")
    private, public_b64 = inputs.make_rsa_key(inp_dir, "large")
    record = inputs.dkim_record(public_b64)
    zones = {kind.domain: inputs.zone(kind.domain, "v=spf1 ip6:2001:db8:b9::/48 -all",
                                      {f"{inputs.SELECTOR}._domainkey": record})}
    text = inputs.message_text(kind.sender, "Large message", size=4096)
    head, _, line = text.partition(b"\r\n\r\n")
    line = line.split(b"\r\n", 1)[0] + b"\r\n"   # message_text is quadratic in size
    raw = inputs.sign(head + b"\r\n\r\n" + line * (size // len(line)),
                      kind.domain, inputs.SELECTOR, private)
    return zones, raw, record.encode()


class RssSampler:
    """The highest RSS of a process, sampled every 20 ms in a thread."""

    def __init__(self, process: procs.Process):
        self.process, self.peak, self.stop = process, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.rss_kb())
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


async def _send_all(address: str, envs: list) -> list:
    return await asyncio.gather(*(send_one(address, env) for env in envs), return_exceptions=True)


def large_rss(out: Path, redis, dns, raw: bytes, name: str, code: Path = procs.ROOT,
              budget: str = "", concurrent: int = 8, log=print) -> dict:
    """RSS (kB) of a fresh daemon before, at its peak during, and 3 s after CONCURRENT
    copies of RAW arrive at once from one IPv6 client; and what they were answered."""
    extra = f"max_buffered_bytes = {budget}" if budget else ""
    socket = f"unix:{out}/{name}.sock"
    daemon = procs.mx6milter(name, out, socket, redis.url, dns.nameservers, level="warning",
                             milter_extra=extra, code=code).start()
    kind = next(k for k in inputs.KINDS if k.name == "unknown")
    env = Envelope(kind.client, f"mail.{kind.domain}", kind.sender, (inputs.RECIPIENT,), raw)
    try:
        asyncio.run(send_one(socket, Envelope(kind.client, env.helo, kind.sender, env.rcpts,
                                              inputs.message_text(kind.sender, "warm-up"))))
        before = daemon.rss_kb()
        started = time.perf_counter()
        with RssSampler(daemon) as sampler:
            verdicts = asyncio.run(_send_all(socket, [env] * concurrent))
        seconds = time.perf_counter() - started
        time.sleep(3)
        after = daemon.rss_kb()
    finally:
        daemon.stop()
    answers: dict = {}
    for v in verdicts:
        key = repr(v) if isinstance(v, BaseException) else \
            (v.reply[:9].decode(errors="replace") if v.reply else v.action)
        answers[key] = answers.get(key, 0) + 1
    row = {"name": name, "budget": budget or "-", "before": before, "peak": sampler.peak,
           "after": after, "seconds": seconds, "answers": answers}
    log(f"  {name:<28} budget {row['budget']:>6}  RSS before {before / 1024:7.1f} MiB  "
        f"peak {sampler.peak / 1024:7.1f} MiB  after {after / 1024:7.1f} MiB  "
        f"{seconds:5.1f} s  {answers}")
    return row


def peak_copies(raw: bytes, record: bytes) -> tuple:
    """(copies held once built, peak copies while verifying, the built one included) of RAW
    in-process: the
    MessageBuilder as the milter feeds it, then dkimpy's parse and canonicalisation.
    The key lookup is answered without DNS, so the body is really canonicalised."""
    import tracemalloc

    import dkim

    from mx6milter.evidence.auth import check_dkim
    from mx6milter.model import MessageBuilder

    head, _, body = raw.partition(b"\r\n\r\n")

    class Budget:
        def txt(self, name):
            return [record]

        def remaining(self):
            return 60.0

    builder = MessageBuilder(1 << 30)
    for line in dkim.rfc822_parse(head + b"\r\n\r\n")[0]:
        builder.add_header(line[0].decode(), line[1].rstrip(b"\r\n"))
    for start in range(0, len(body), 65535):
        builder.add_body(body[start:start + 65535])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    message = builder.build()
    builder = None
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.reset_peak()
    results = check_dkim(Budget(), message.raw)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return held / len(raw), peak / len(raw), results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--large", action="store_true", required=True)
    parser.add_argument("--size", type=int, default=25 << 20)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--code", action="append", default=[],
                        help="NAME=DIR: also run the daemon from another source tree")
    parser.add_argument("--budget", action="append", default=[],
                        help="a [milter] max_buffered_bytes to run this tree with")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = procs.ROOT / "bench" / "out" / f"memory-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    zones, raw, record = large_message(out, args.size)
    git = subprocess.run(["git", "-C", str(procs.ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    print(f"bench.memory: {args.concurrent} x {len(raw):,}-byte DKIM-signed IPv6 messages at "
          f"once; code {git}; {datetime.datetime.now().isoformat(timespec='seconds')}")
    held, peak, results = peak_copies(raw, record)
    print(f"  in-process: {held:.2f} copies held once built, {peak:.2f} copies (with it) at "
          f"the peak of DKIM verification ({results[0].result if results else 'no signature'})")
    redis = procs.RedisServer().start()
    dns = procs.DnsServer(extra_zones=zones).start()
    try:
        for spec in args.code:
            name, _, directory = spec.partition("=")
            large_rss(out, redis, dns, raw, name, code=Path(directory),
                      concurrent=args.concurrent)
        for budget in args.budget or [""]:
            large_rss(out, redis, dns, raw, f"this tree {budget or 'default'}".replace(" ", "-"),
                      budget=budget, concurrent=args.concurrent)
    finally:
        dns.close()
        redis.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
