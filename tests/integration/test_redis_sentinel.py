"""Redis Sentinel (tests/support/servers.py SentinelSet: a primary, a replica, three real
sentinels): the daemon's decisions, its background writers and mx6ctl follow the primary
through a failover; IPv6 mail falls back only for the window, IPv4 mail is untouched;
``import --replace`` cut by a failover fails cleanly and leaves the list whole."""
import subprocess
import sys
import time

import Milter
import pytest

from mx6milter.config import load_config
from mx6milter.model import Tier
from mx6milter.service import build_evaluator

from ctl_runner import Ctl
from dkimkeys import message
from harness import decide, run_milter
from servers import SentinelSet, count_round_trips, wait_for

WHITE_IP, LATER_IP = "2001:db8:51::1", "2001:db8:52::1"


@pytest.fixture
def sentinels():
    """A Sentinel set of this test's own: it kills its primary."""
    servers = SentinelSet().start()
    yield servers
    servers.close()


def sentinel_ctl(directory, sentinels, nameservers, extra=""):
    return Ctl(directory, "redis://127.0.0.1:6379/0", nameservers,
               extra=f"[redis]\nsentinels = {sentinels.sentinels}\n"
                     f"service_name = {sentinels.service}\n{extra}")


def test_the_milter_and_mx6ctl_follow_a_failover(tmp_path, sentinels, dns_server):
    ctl = sentinel_ctl(tmp_path, sentinels, dns_server.nameservers)
    assert ctl("ip", "add", "2001:db8:51::/48").rc == 0
    evaluator = build_evaluator(load_config(str(ctl.config)))
    plain = message(from_="Someone <someone@example.net>")
    assert decide(evaluator, WHITE_IP, plain, ["u@example.org"]).decision.tier is Tier.WHITELISTED
    wait_for(lambda: sentinels.replica.client().hlen("mx6:v1:ip:local") == 1, what="replication")

    killed = sentinels.kill_primary()
    died = time.monotonic()
    seen = []
    while True:
        outcome = decide(evaluator, WHITE_IP, plain, ["u@example.org"])
        ipv4 = run_milter(evaluator, plain, client_ip="192.0.2.10")
        seen.append((outcome, ipv4.rc))
        if outcome.decision.tier is Tier.WHITELISTED:
            break
        assert time.monotonic() - died < 60, "no whitelisted decision a minute after the kill"
        time.sleep(0.1)
    back = time.monotonic() - died
    print(f"\nprimary killed: IPv6 whitelisted again after {back:.1f} s, "
          f"{len(seen) - 1} decisions fell back meanwhile")
    assert sentinels.current_primary_port() != killed.port
    for outcome, _ in seen[:-1]:
        assert outcome.evidence.failures == ("redis-unavailable",)
        assert outcome.decision.reply.status == "4.3.0"
    assert all(rc == Milter.ACCEPT for _, rc in seen), "IPv4 mail was refused"

    # mx6ctl and the background writers reach the new primary too
    assert ctl("ip", "add", "2001:db8:52::/48").rc == 0
    assert decide(evaluator, LATER_IP, plain, ["u@example.org"]).decision.tier is Tier.WHITELISTED
    assert [line.split("\t")[0] for line in ctl("ip", "list").out.splitlines()] == [
        "2001:db8:51::/48", "2001:db8:52::/48"]
    store = evaluator.store
    assert store.record_history("history", "ipv4", "example.com", 20000, 0, 3600) == 1
    assert store.learn_addressbooks("learned", {"u@example.org": ["a@example.net"]}, 0, 3600, 10) == 0


def test_read_from_replicas_reads_a_replica_and_writes_the_primary(tmp_path, sentinel_set,
                                                                   sentinel_redis, dns_server):
    ctl = sentinel_ctl(tmp_path, sentinel_set, dns_server.nameservers, "read_from_replicas = yes\n")
    assert ctl("ip", "add", "2001:db8:51::/48").rc == 0
    evaluator = build_evaluator(load_config(str(ctl.config)))
    primary = sentinel_set.current_primary_port()
    replica = sentinel_set.replica.port if primary == sentinel_set.primary.port \
        else sentinel_set.primary.port
    wait_for(lambda: sentinel_set.replica.client().hlen("mx6:v1:ip:local") == 1, what="replication")
    plain = message(from_="Someone <someone@example.net>")
    decide(evaluator, WHITE_IP, plain, ["u@example.org"])              # warm
    with count_round_trips() as sent:
        outcome = decide(evaluator, WHITE_IP, plain, ["u@example.org"])
    assert outcome.decision.tier is Tier.WHITELISTED
    assert dict(sent) == {replica: 1}
    evaluator.store.record_history("history", "ipv4", "example.com", 20000, 0, 3600)  # warm
    with count_round_trips() as sent:
        assert evaluator.store.record_history("history", "ipv4", "example.com", 20000, 0, 3600) == 2
    assert dict(sent) == {primary: 1}


def test_import_replace_cut_by_a_failover_fails_cleanly(tmp_path, sentinels):
    ctl = sentinel_ctl(tmp_path, sentinels, "127.0.0.1:9")
    old = [f"2001:db8:{n:x}::/48" for n in range(1, 201)]
    assert ctl("import", "ip", ctl.file("old.txt", "\n".join(old) + "\n"), "--source", "feed").rc == 0
    new = [f"2001:db8:{n // 65536:x}:{n % 65536:x}::/64" for n in range(1, 200001)]
    new_file = ctl.file("new.txt", "\n".join(new) + "\n")
    wait_for(lambda: sentinels.replica.client().hlen("mx6:v1:ip:feed") == len(old), what="replication")
    primary = sentinels.primary.client()
    run = subprocess.Popen([sys.executable, "-m", "mx6milter.ctl", "-c", str(ctl.config), "import",
                            "ip", str(new_file), "--source", "feed", "--replace"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(True for _ in primary.scan_iter(match="mx6:v1:ip:feed~*", count=100)),
             interval=0.01, what="the staging keys")
    sentinels.kill_primary()
    _, err = run.communicate(timeout=120)
    wait_for(lambda: sentinels.current_primary_port() != sentinels.primary.port, timeout=30,
             what="the promotion")

    def listed():
        wait_for(lambda: ctl("ip", "list", "--source", "feed").rc == 0, timeout=30,
                 what="mx6ctl to reach the new primary")
        return [line.split("\t")[0] for line in ctl("ip", "list", "--source", "feed").out.splitlines()]

    print(f"\nimport --replace cut by the failover: exit {run.returncode}: {err.strip()[-200:]}")
    assert "Traceback" not in err
    if run.returncode == 0:        # finished, and replicated, before the primary died
        assert sorted(listed()) == sorted(new)
    else:
        assert run.returncode == 1 and "aborted while loading; the list is unchanged, run it again" in err
        assert sorted(listed()) == sorted(old)            # whole: the old list, not a part
    again = ctl("import", "ip", new_file, "--source", "feed", "--replace", "-q")
    assert again.rc == 0, again.err
    assert len(listed()) == len(new)


def test_passwords_for_the_sentinels_and_the_data_nodes(tmp_path, dns_server):
    servers = SentinelSet(password="data-secret-1", sentinel_password="sentinel-secret-2").start()
    try:
        files = {}
        for name, text in (("redis.pw", "data-secret-1"), ("sentinel.pw", "sentinel-secret-2"),
                           ("wrong.pw", "not-the-secret")):
            files[name] = tmp_path / name
            files[name].write_text(text + "\n")
            files[name].chmod(0o600)
        (tmp_path / "good").mkdir()
        ctl = sentinel_ctl(tmp_path / "good", servers, dns_server.nameservers,
                           f"password_file = {files['redis.pw']}\n"
                           f"sentinel_password_file = {files['sentinel.pw']}\n")
        assert ctl("ip", "add", "2001:db8:51::/48").rc == 0
        evaluator = build_evaluator(load_config(str(ctl.config)))
        plain = message(from_="Someone <someone@example.net>")
        assert decide(evaluator, WHITE_IP, plain, ["u@example.org"]).decision.tier is Tier.WHITELISTED

        (tmp_path / "bad").mkdir()
        bad = sentinel_ctl(tmp_path / "bad", servers, dns_server.nameservers,
                           f"password_file = {files['redis.pw']}\n"
                           f"sentinel_password_file = {files['wrong.pw']}\n")
        run = bad("ip", "list")
        assert run.rc == 1
        assert "mx6ctl: Redis Sentinel: No master found for 'mx6test'" in run.err
        assert "sentinel_password_file" in run.err
        assert not any(secret in run.err for secret in ("secret", "not-the"))
    finally:
        servers.close()
