"""Memory: the daemon's RSS under a long warm load; Redis with big lists."""
from __future__ import annotations

import ipaddress
import time

from . import procs
from .milterclient import run_load
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
