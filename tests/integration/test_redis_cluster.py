"""A real 3-primary Redis Cluster (tests/support/servers.py RedisClusterSet): every mx6ctl
verb that touches Redis, every decision kind, one round trip per shard a decision
involves (counted), and a resharding by ``redis-cli --cluster reshard`` under load."""
import subprocess
import threading
import time

import pytest
from redis.crc import key_slot

from mx6milter.addresses import normalise_address
from mx6milter.config import load_config
from mx6milter.model import Tier
from mx6milter.service import build_evaluator

from ctl_runner import Ctl
from dkimkeys import message
from harness import decide
from servers import count_round_trips

POLICY = "[policy]\nauthserv_id = mx.example.org\n[greenlist]\nfcrdns = no\n"
WHITE_IP, GREEN_IP, ASN_IP, STRANGER_IP = ("2001:db8:31::1", "2001:db8:32::1", "2001:db8:33::1",
                                           "2001:db8:99::1")


@pytest.fixture
def ctl(tmp_path, cluster_redis, dns_server):
    return Ctl(tmp_path, "redis://127.0.0.1:6379/0", dns_server.nameservers,
               extra=cluster_redis + POLICY)


def evaluator_for(ctl):
    return build_evaluator(load_config(str(ctl.config)))


def evidence(outcome) -> list:
    return [str(f).split("(")[0] for f in outcome.evidence.whitelist + outcome.evidence.greenlist]


def senders(listing: str) -> list:
    return [line.split("\t")[1] for line in listing.splitlines()]


def test_every_verb_against_the_cluster(ctl):
    def ok(*argv):
        run = ctl(*argv)
        assert run.rc == 0, (argv, run.err)
        return run.out

    ok("ip", "add", "2001:db8:31::/48", "--source", "feed")
    ok("domain", "add", "example.com")
    ok("addressbook", "add", "user1@example.org", "alice@example.com")
    ok("addressbook", "add", "user2@example.org", "alice@example.com", "bob@example.com")
    ok("green", "add", "2001:db8:32::/48")
    ok("asnlist", "add", "64500")
    ok("mishandle4xx", "add", "mishandling.example")
    ok("registrar", "add", "292")
    ok("import", "asn", ctl.file("asn.txt", "2001:db8:33::\t48\t64500\n"))
    assert "2001:db8:31::/48\tsource=feed" in ok("ip", "list")
    assert ok("domain", "list").startswith("example.com")
    assert senders(ok("addressbook", "list", "user2@example.org")) == [
        "alice@example.com", "bob@example.com"]
    assert "64500" in ok("asn", "lookup", ASN_IP)
    for verb, value in (("green", "2001:db8:32::/48"), ("asnlist", "64500"),
                        ("mishandle4xx", "mishandling.example"), ("registrar", "292")):
        assert value in ok(verb, "list"), verb
    evaluator_for(ctl).store.record_history("history", "ipv4", "example.com", 20000, 0, 3600)
    assert "no IPv4 history" not in ok("history", "show", "example.com")
    stats = ok("stats").splitlines()
    assert any(line.split()[:3] == ["addressbook", "local", "3"] for line in stats), stats
    assert stats[-1].startswith("redis used_memory: ")

    # bulk: import, import --replace (per slot), export
    book = "".join(f"user{n}@example.org,sender{n}@example.net\n" for n in range(300))
    ok("import", "addressbook", ctl.file("book.csv", book), "--source", "crm")
    replaced = "".join(f"user{n}@example.org,new{n}@example.net\n" for n in range(0, 300, 2))
    ok("import", "addressbook", ctl.file("book2.csv", replaced), "--source", "crm", "--replace")
    exported = ok("export", "addressbook", "--source", "crm", "--format", "csv").splitlines()
    assert sorted(line.rstrip(",") for line in exported if "@" in line) == sorted(replaced.splitlines())
    ok("import", "ip", ctl.file("ips.txt", "2001:db8:41::/48\n2001:db8:42::/48\n"),
       "--source", "feed", "--replace")
    assert [line.split("\t")[0] for line in ok("ip", "list").splitlines()] == [
        "2001:db8:41::/48", "2001:db8:42::/48"]

    # removals
    ok("addressbook", "remove", "user2@example.org", "bob@example.com", "--source", "local")
    assert senders(ok("addressbook", "list", "user2@example.org", "--source", "local")) == [
        "alice@example.com"]
    ok("addressbook", "remove", "user1@example.org", "--all")    # every source's book
    assert senders(ok("addressbook", "list", "user1@example.org")) == []
    ok("domain", "remove", "example.com")
    assert ok("domain", "list").strip() == ""

    # explain, through the daemon's own construction
    run = ctl("explain", "--client-ip", "2001:db8:41::1", "--mail-from", "x@example.net", "--rcpt",
              "user3@example.org", "--json", ctl.file("m.eml", message().decode()))
    assert run.rc == 0, run.err
    assert '"tier": "whitelisted"' in run.out and "2001:db8:41::/48" in run.out


def test_every_decision_kind_on_the_cluster(ctl, dkim_keys):
    ctl("ip", "add", "2001:db8:31::/48")
    ctl("domain", "add", "example.com")
    ctl("green", "add", "2001:db8:32::/48")
    ctl("asnlist", "add", "64500")
    ctl("import", "asn", ctl.file("asn.txt", "2001:db8:33::\t48\t64500\n"))
    ctl("mishandle4xx", "add", "2001:db8:34::/48")
    recipients = [f"user{n}@example.org" for n in range(6)]
    for rcpt in recipients:
        assert ctl("addressbook", "add", rcpt, "alice@example.com").rc == 0
    evaluator = evaluator_for(ctl)
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    plain = message(from_="Stranger <someone@example.net>")

    whitelisted_ip = decide(evaluator, WHITE_IP, plain, ["user0@example.org"], "x@example.net")
    assert whitelisted_ip.decision.tier is Tier.WHITELISTED and evidence(whitelisted_ip) == ["ip=pass"]
    by_domain = decide(evaluator, STRANGER_IP, signed, ["someone@example.org"])
    assert by_domain.decision.tier is Tier.WHITELISTED and "domain=pass" in evidence(by_domain)
    ctl("domain", "remove", "example.com")
    by_books = decide(evaluator, STRANGER_IP, signed, recipients)
    assert by_books.decision.tier is Tier.WHITELISTED and evidence(by_books) == ["addressbook=pass"]
    one_missing = decide(evaluator, STRANGER_IP, signed, recipients + ["new@example.org"])
    assert one_missing.decision.tier is Tier.NONE
    green = decide(evaluator, GREEN_IP, plain, ["user0@example.org"], "x@example.net")
    assert green.decision.tier is Tier.GREENLISTED and evidence(green) == ["network=pass"]
    by_asn = decide(evaluator, ASN_IP, plain, ["user0@example.org"], "x@example.net")
    assert by_asn.decision.tier is Tier.GREENLISTED and evidence(by_asn) == ["asn=pass"]
    retrier = decide(evaluator, "2001:db8:34::1", plain, ["user0@example.org"], "x@example.net")
    assert retrier.decision.tier is Tier.GREENLISTED and evidence(retrier) == ["mishandle4xx=pass"]
    nothing = decide(evaluator, STRANGER_IP, plain, ["user0@example.org"], "x@example.net")
    assert nothing.decision.tier is Tier.NONE and nothing.evidence.failures == ()
    today = int(time.time() // 86400)
    evaluator.store.load("history", "ipv4", [("example.com", "v", f"9 {today - 30} {today} 0")])
    known = decide(evaluator, STRANGER_IP, signed, ["nobody@example.org"])
    assert known.decision.tier is Tier.GREENLISTED and evidence(known) == ["history=pass"]


def test_a_decision_costs_one_round_trip_per_shard(ctl, dkim_keys, redis_cluster):
    recipients = [f"user{n}@example.org" for n in range(8)]
    for rcpt in recipients:
        ctl("addressbook", "add", rcpt, "alice@example.com")
    evaluator = evaluator_for(ctl)
    store = evaluator.store
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    cluster = redis_cluster.client()

    def shard(key):
        return cluster.get_node_from_key(key).port

    for chosen in (recipients[:1], recipients[:3], recipients):
        decide(evaluator, STRANGER_IP, signed, chosen)        # warm: scripts, slots, sources
        with count_round_trips() as sent:
            outcome = decide(evaluator, STRANGER_IP, signed, chosen)
        assert outcome.decision.tier is Tier.WHITELISTED
        ids = [store.addressbook_id(normalise_address(r)) for r in chosen]
        expected = {shard(store.kind_key("ip"))} | {shard(store.key("ab", "local", i)) for i in ids}
        assert dict(sent) == {port: 1 for port in expected}, (chosen, expected)


def _window_prefix(cluster, width=40):
    """A key prefix whose {PREFIXv1} tag falls among the lowest WIDTH slots of its node, and
    recipients whose addressbooks do too: ``--cluster-slots`` of those moves exactly them."""
    lows: dict = {}
    for (low, _high), node in cluster.cluster_slots().items():   # as created: one range a node
        lows.setdefault(node["primary"], []).append(low)
    firsts = {min(found) for found in lows.values()}
    for n in range(100000):
        prefix = f"r{n}:"
        slot = key_slot(f"{prefix}v1".encode())
        first = max(low for low in firsts if low <= slot)
        if slot - first < width:
            return prefix, first, slot
    raise AssertionError("no prefix found")


def test_resharding_under_load_gives_no_wrong_verdict(tmp_path, redis_cluster, cluster_redis,
                                                      dns_server, dkim_keys):
    cluster = redis_cluster.client()
    prefix, first, tag_slot = _window_prefix(cluster)
    ctl = Ctl(tmp_path, "redis://127.0.0.1:6379/0", dns_server.nameservers,
              extra=cluster_redis + f"key_prefix = {prefix}\n" + POLICY)
    evaluator = evaluator_for(ctl)
    store = evaluator.store
    moving = [r for r in (f"u{n}@example.org" for n in range(20000))
              if first <= key_slot(f"{{{store.addressbook_id(r)}}}".encode()) < tag_slot + 1][:3]
    assert len(moving) == 3
    recipients = moving + ["user0@example.org"]
    for rcpt in recipients:
        ctl("addressbook", "add", rcpt, "alice@example.com")
    ctl("ip", "add", "2001:db8:31::/48")
    # many keys in the moving slot, so that it stays half-migrated for a while
    store.load("history", "ipv4", ((f"d{n}.example", "v", "1 20000 20000 0") for n in range(50000)))
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    source = cluster.get_node_from_key(store.kind_key("ip")).port
    target = next(node.port for node in redis_cluster.nodes if node.port != source)
    ids = {node.port: node.client().execute_command("CLUSTER", "MYID") for node in redis_cluster.nodes}

    outcomes = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            outcomes.append(("ip", decide(evaluator, WHITE_IP, message(), recipients, "x@example.net"),
                             time.monotonic()))
            outcomes.append(("ab", decide(evaluator, STRANGER_IP, signed, recipients),
                             time.monotonic()))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        while len(outcomes) < 10:              # warm: DNS cached, scripts loaded
            worker.join(0.05)
        started = time.monotonic()
        reshard = subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-from",
             ids[source], "--cluster-to", ids[target], "--cluster-slots",
             str(tag_slot - first + 1), "--cluster-yes"],
            capture_output=True, text=True, timeout=120)
        ended = time.monotonic()
        worker.join(1.5)                       # past the store's one second of fail-fast
        done = len(outcomes)
        while len(outcomes) < done + 20:       # then decisions on the new layout
            worker.join(0.05)
    finally:
        stop.set()
        worker.join()
    assert reshard.returncode == 0, reshard.stderr
    assert redis_cluster.client().get_node_from_key(store.kind_key("ip")).port == target
    wrong = [(kind, o.decision, o.evidence.failures) for kind, o, _ in outcomes
             if o.decision.tier is not Tier.WHITELISTED
             and o.evidence.failures != ("redis-unavailable",)]
    assert not wrong, wrong[:3]
    during = [o for _, o, at in outcomes if started <= at <= ended]
    whitelisted = sum(o.decision.tier is Tier.WHITELISTED for o in during)
    print(f"\nresharding {tag_slot - first + 1} slots ({ended - started:.1f} s) under load: "
          f"{len(during)} decisions meanwhile, {whitelisted} whitelisted, "
          f"{len(during) - whitelisted} fell back (redis-unavailable); {len(outcomes)} in all")
    assert during, "no decision was made while the slots moved"
    assert all(o.decision.tier is Tier.WHITELISTED for _, o, _ in outcomes[done:])

