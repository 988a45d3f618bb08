"""A Redis Cluster whose primaries each have a replica (tests/support/servers.py
RedisClusterSet(replicas=1)): SIGKILL the primary serving the whitelists' slot, or the one
serving a recipient's addressbook. While it is down IPv6 decisions fall back with reason
redis-unavailable (never an accept without evidence, never an exception out of the
evaluator) and IPv4 mail is untouched; once the Cluster has promoted its replica the same
evaluator whitelists again, nothing restarted, and mx6ctl writes to the promoted replica
and finds every entry written before the kill.

A decision that needs only live primaries may fall back meanwhile as well: the store's
one second of fail-fast after a failed lookup is for the whole Cluster, and with
cluster-require-full-coverage (Redis' default) the live primaries refuse every slot
from the moment the dead one is marked failed until its replica is promoted."""
import time

import Milter
import pytest

from mx6milter.config import load_config
from mx6milter.model import Tier
from mx6milter.service import build_evaluator

from ctl_runner import Ctl
from dkimkeys import message
from harness import decide, run_milter
from servers import RedisClusterSet

POLICY = "[policy]\nauthserv_id = mx.example.org\n[greenlist]\nfcrdns = no\n"
WHITE_IP, GREEN_IP, ASN_IP, RETRIER_IP, STRANGER_IP, LATER_IP = (
    "2001:db8:31::1", "2001:db8:32::1", "2001:db8:33::1", "2001:db8:34::1", "2001:db8:99::1",
    "2001:db8:35::1")
EXPORTED = ("ip", "domain", "addressbook", "asn", "green", "asnlist", "mishandle4xx")


@pytest.fixture
def cluster():
    """A Cluster of this test's own (it kills a primary): three primaries, a replica each."""
    servers = RedisClusterSet(replicas=1).start()
    yield servers
    servers.close()


def evidence(outcome) -> list:
    return [str(f).split("(")[0] for f in outcome.evidence.whitelist + outcome.evidence.greenlist]


def exports(ctl) -> dict:
    runs = {kind: ctl("export", kind) for kind in EXPORTED}
    assert all(run.rc == 0 for run in runs.values()), {k: r.err for k, r in runs.items() if r.rc}
    return {kind: sorted(line for line in run.out.splitlines() if not line.startswith("#"))
            for kind, run in runs.items()}      # the comment line dates the export


def recipient(cluster, store, on: bool, node) -> str:
    """A recipient whose addressbook is (ON) or is not on NODE."""
    return next(r for r in (f"user{n}@example.org" for n in range(1000))
                if (cluster.primary_of(store.key("ab", "local", store.addressbook_id(r)))
                    is node) == on)


def load_every_kind(ctl, rcpt: str) -> None:
    for argv in (("ip", "add", "2001:db8:31::/48"),
                 ("domain", "add", "example.net"),      # not the signer: the book must vouch
                 ("addressbook", "add", rcpt, "alice@example.com"),
                 ("green", "add", "2001:db8:32::/48"),
                 ("asnlist", "add", "64500"),
                 ("import", "asn", ctl.file("asn.txt", "2001:db8:33::\t48\t64500\n")),
                 ("mishandle4xx", "add", "2001:db8:34::/48"),
                 ("registrar", "add", "292")):
        run = ctl(*argv)
        assert run.rc == 0, (argv, run.err)


def check_the_outage(seen: list, expected: list) -> None:
    """Every decision of the outage (SEEN) fell back for Redis or had its evidence; the last
    one whitelisted with EXPECTED; IPv4 mail was accepted all along."""
    assert len(seen) > 1, "the kill went unnoticed: no decision fell back"
    assert evidence(seen[-1]["target"]) == expected
    fell_back = [s["target"] for s in seen[:-1]] + [
        s["neighbour"] for s in seen if s["neighbour"].decision.tier is not Tier.WHITELISTED]
    for outcome in fell_back:
        assert outcome.decision.tier is Tier.NONE
        assert outcome.evidence.failures == ("redis-unavailable",)
        assert outcome.decision.reply.status == "4.3.0"
    for s in seen:
        assert s["neighbour"] in fell_back or evidence(s["neighbour"]) == ["ip=pass"]
        stranger = s["stranger"]
        assert stranger.decision.tier is Tier.NONE and not evidence(stranger)
        assert stranger.evidence.failures in ((), ("redis-unavailable",))
    assert all(s["ipv4"] == Milter.ACCEPT for s in seen), "IPv4 mail was refused"


@pytest.mark.parametrize("victim", ["whitelists", "addressbook"])
def test_a_primary_killed_fails_over_to_its_replica(victim, tmp_path, cluster, dns_server,
                                                    dkim_keys):
    ctl = Ctl(tmp_path, "redis://127.0.0.1:6379/0", dns_server.nameservers,
              extra=f"[redis]\ncluster = {cluster.seeds}\n" + POLICY)
    evaluator = build_evaluator(load_config(str(ctl.config)))
    store = evaluator.store
    whitelists = cluster.primary_of(store.kind_key("ip"))
    rcpt = recipient(cluster, store, False, whitelists)
    neighbour = recipient(cluster, store, True, whitelists)   # touches the whitelists' only
    watched = store.kind_key("ip") if victim == "whitelists" else \
        store.key("ab", "local", store.addressbook_id(rcpt))
    killed = cluster.primary_of(watched)
    load_every_kind(ctl, rcpt)
    before = exports(ctl)
    signed = dkim_keys.sign(message(), "example.com", "rsa")
    plain = message(from_="Stranger <someone@example.net>")

    def by_ip(recipient=rcpt):
        return decide(evaluator, WHITE_IP, plain, [recipient], "x@example.net")

    def by_book():
        return decide(evaluator, STRANGER_IP, signed, [rcpt])

    target, expected = (by_ip, ["ip=pass"]) if victim == "whitelists" else (by_book,
                                                                            ["addressbook=pass"])
    for decision, wanted in ((by_ip, ["ip=pass"]), (by_book, ["addressbook=pass"])):
        outcome = decision()
        assert outcome.decision.tier is Tier.WHITELISTED and evidence(outcome) == wanted
    replicas = cluster.replicas_of(killed)
    assert replicas, "the primary has no replica"
    cluster.wait_replicated()          # nothing written before the kill is the replica's to lose

    killed.kill()
    died = time.monotonic()
    promoted_at = None
    seen: list = []
    while True:
        outcome = target()
        seen.append({"target": outcome,
                     "neighbour": by_ip(neighbour),
                     "stranger": decide(evaluator, STRANGER_IP, plain, [rcpt], "x@example.net"),
                     "ipv4": run_milter(evaluator, plain, client_ip="192.0.2.10",
                                        rcpts=(rcpt,)).rc})
        if promoted_at is None and cluster.primary_of(watched) is not killed:
            promoted_at = time.monotonic()
        if outcome.decision.tier is Tier.WHITELISTED:
            break
        assert time.monotonic() - died < 60, "no whitelisted decision a minute after the kill"
        time.sleep(0.05)
    back = time.monotonic() - died
    neighbours = sum(s["neighbour"].decision.tier is not Tier.WHITELISTED for s in seen)
    print(f"\n{victim}' primary killed: promotion seen after "
          f"{(promoted_at or back + died) - died:.1f} s, whitelisted again after {back:.1f} s; "
          f"{len(seen) - 1} decisions fell back meanwhile; {neighbours} of {len(seen)} decisions "
          "that touched only the whitelists' primary fell back too")
    check_the_outage(seen, expected)
    assert cluster.primary_of(watched) in replicas

    # every kind again, from the same evaluator: nothing was restarted
    for decision, wanted in ((by_ip, ["ip=pass"]), (by_book, ["addressbook=pass"])):
        outcome = decision()
        assert outcome.decision.tier is Tier.WHITELISTED and evidence(outcome) == wanted
    for ip, wanted in ((GREEN_IP, "network=pass"), (ASN_IP, "asn=pass"),
                       (RETRIER_IP, "mishandle4xx=pass")):
        outcome = decide(evaluator, ip, plain, [rcpt], "x@example.net")
        assert outcome.decision.tier is Tier.GREENLISTED and evidence(outcome) == [wanted]

    # the data written before the kill survived; mx6ctl and the background writers write
    assert exports(ctl) == before
    assert ctl("ip", "add", "2001:db8:35::/48").rc == 0
    assert ctl("addressbook", "add", rcpt, "bob@example.com").rc == 0
    assert decide(evaluator, LATER_IP, plain, [rcpt], "x@example.net").decision.tier \
        is Tier.WHITELISTED
    assert store.record_history("history", "ipv4", "example.com", 20000, 0, 3600) == 1
    assert store.learn_addressbooks("learned", {rcpt: ["carol@example.net"]}, 0, 3600, 10) == 0
    after = exports(ctl)
    assert after["ip"] == sorted(before["ip"] + ["2001:db8:35::/48"])
    assert len(after["addressbook"]) == len(before["addressbook"]) + 2    # bob, carol (learnt)
