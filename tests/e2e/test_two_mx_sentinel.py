"""Two MX hosts, each a private Postfix with its own mx6milter daemon, listening on its
own IPv6 loopback address (2001:db8:15::a, 2001:db8:15::b) and on 127.0.0.1, sharing
one Sentinel-managed Redis (a primary, a replica, three sentinels: real processes).
Under a steady load through both, the primary is killed. The ledgers show every message
sent was delivered once or refused, IPv4 was never refused, IPv6 was whitelisted again
a measured time after the kill, and an entry added through host A's configuration is
honoured by host B."""
from __future__ import annotations

import threading
import time

import pytest

from e2e import UNKNOWN, WHITELISTED, Ledger, loopback
from e2e import sources  # noqa: F401  (fixture)
from milterd import MilterDaemon, merge_ini, mx6ctl
from postfix import CONTRIB, PrivatePostfix
from servers import SentinelSet

from test_postfix_e2e import MILTER_EXTRA, contrib_milter_keys


HOSTS = {"a": "2001:db8:15::a", "b": "2001:db8:15::b"}


class Host:
    """One MX host: Postfix, its milter, and the ledger of what went through it."""

    def __init__(self, name, tmp, sentinels, dns_server):
        self.name = name
        self.address = HOSTS[name]
        listeners = (f"127.0.0.1:{{port}} inet n - y - - smtpd\n"
                     f"[{self.address}]:{{port}} inet n - y - - smtpd\n")
        self.postfix = PrivatePostfix(main_cf=(CONTRIB / "main.cf").read_text(),
                                      listeners=listeners).start()
        redis = (f"[redis]\nsentinels = {sentinels.sentinels}\n"
                 f"service_name = {sentinels.service}\n")
        extra = merge_ini(contrib_milter_keys(self.postfix.queue_dir), MILTER_EXTRA, redis)
        self.milter = MilterDaemon(tmp / name, f"unix:{self.postfix.queue_dir}/mx6milter/"
                                   "mx6milter.sock", "redis://127.0.0.1:6379/0", extra=extra,
                                   nameservers=dns_server.nameservers).start()
        self.ledger = Ledger()
        self.sent = {"ipv6": [], "ipv4": []}      # (time, code) of every message

    def send(self, family: str, source: str | None = None) -> int:
        source = source or (WHITELISTED if family == "ipv6" else "127.0.0.1")
        host = self.address if family == "ipv6" else "127.0.0.1"
        _, _, reply = self.ledger.message(self.postfix.port, source, host=host)
        self.sent[family].append((time.monotonic(), reply.code))
        return reply.code

    def close(self):
        self.milter.stop()
        self.postfix.close()


@pytest.fixture
def hosts(sources, dns_server, tmp_path):  # noqa: F811
    sentinels = SentinelSet().start()
    started = []
    try:
        with loopback(HOSTS.values()):
            for name in HOSTS:
                started.append(Host(name, tmp_path, sentinels, dns_server))
            yield sentinels, started
    finally:
        for host in started:
            host.close()
        sentinels.close()


def recovered(host, since: float) -> bool:
    """IPv6 mail through HOST was refused after SINCE, and whitelisted after that."""
    codes = [(t, code) for t, code in host.sent["ipv6"] if t > since]
    refused = [t for t, code in codes if code != 250]
    return bool(refused) and any(code == 250 and t > refused[-1] for t, code in codes)


def test_two_mx_hosts_ride_out_a_sentinel_failover(hosts):
    sentinels, (a, b) = hosts
    mx6ctl(a.milter.conf, "ip", "add", "2001:db8:6::/48")
    assert a.send("ipv6") == 250 and b.send("ipv6") == 250

    stop = threading.Event()
    errors = []

    def load(host):
        try:
            while not stop.is_set():
                host.send("ipv6")
                host.send("ipv4")
        except Exception as err:        # shown by the assertion below, not lost in a thread
            errors.append(err)

    workers = [threading.Thread(target=load, args=(host,)) for host in (a, b)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2)
        killed_at = time.monotonic()
        sentinels.kill_primary()
        deadline = killed_at + 60
        while time.monotonic() < deadline and not all(recovered(h, killed_at) for h in (a, b)):
            time.sleep(0.2)
        time.sleep(2)                   # and a steady stretch after
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not errors, errors

    for host in (a, b):
        host.ledger.check(host.postfix)        # every accepted message arrived exactly once
        sent = len(host.sent["ipv6"]) + len(host.sent["ipv4"])
        assert sent == len(host.ledger.accepted) + len(host.ledger.refused)
        assert all(code == 250 for _, code in host.sent["ipv4"]), "IPv4 mail was refused"
        refused = [code for t, code in host.sent["ipv6"] if code != 250]
        assert all(code == 451 for code in refused)
        assert all(reply.lines[0].startswith("4.3.0 ") for reply in host.ledger.refused.values())
        after = [t for t, code in host.sent["ipv6"] if t > killed_at and code == 250]
        last_refused = max((t for t, code in host.sent["ipv6"] if code != 250), default=killed_at)
        assert after and after[-1] > last_refused, f"host {host.name}: IPv6 not whitelisted again"
        back = min(t for t in after if t > last_refused) - killed_at
        print(f"\nhost {host.name}: {len(host.sent['ipv6'])} IPv6 and {len(host.sent['ipv4'])} "
              f"IPv4 messages, {len(refused)} IPv6 refused (451 4.3.0) during the failover, "
              f"IPv6 whitelisted again {back:.1f} s after the kill; sent {sent} = delivered "
              f"{len(host.ledger.accepted)} + refused {len(host.ledger.refused)}")

    # an entry added through host A is honoured by host B, on the new primary
    assert b.send("ipv6", UNKNOWN) == 451
    mx6ctl(a.milter.conf, "ip", "add", f"{UNKNOWN}/128")
    assert b.send("ipv6", UNKNOWN) == 250
    b.ledger.check(b.postfix)
