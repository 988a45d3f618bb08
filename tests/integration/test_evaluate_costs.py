"""What one decision costs, measured at the real servers: DNS queries counted in BIND's
query log, Redis commands counted by Redis itself (INFO commandstats) and round trips
counted on the client's socket."""
import Milter
import pytest
import redis

from mx6milter.addresses import normalise_address
from mx6milter.dns import Resolver
from mx6milter.evaluate import Evaluator
from mx6milter.store import Store

from conftest import make_config
from dkimkeys import message
from harness import run_milter
from servers import CountingConnection

POLICY = "[policy]\nauthserv_id = mx.example.org\n"


def test_second_identical_message_causes_no_dns_query(evaluator_factory, dns_server, dkim_keys):
    evaluator = evaluator_factory(POLICY)       # a fresh resolver: an empty cache
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    raw = dkim_keys.sign(raw, "esp.example", "ed", "ed25519")
    before = dns_server.queries()
    first = run_milter(evaluator, raw, client_ip="2001:db8:10::99", mail_from="b@bounce.example.com")
    after_first = dns_server.queries()
    second = run_milter(evaluator, raw, client_ip="2001:db8:10::99",
                        mail_from="b@bounce.example.com")
    after_second = dns_server.queries()
    asked = after_first[len(before):]
    # SPF of the MAIL FROM domain, both DKIM keys, the From domain's DMARC record (and
    # whatever the greenlist signals look up, e.g. the client's PTR)
    assert {("_dmarc.example.com", "TXT"), ("bounce.example.com", "TXT"),
            ("ed._domainkey.esp.example", "TXT"), ("rsa._domainkey.example.com", "TXT")} <= set(asked)
    assert len(asked) == len(set(asked))                 # nothing asked twice
    assert after_second == after_first                   # the second message: no query at all
    assert first.rc == second.rc == Milter.TEMPFAIL     # nothing whitelisted: same verdict
    assert first.reply == second.reply
    assert evaluator.resolver.lookups == len(asked)


def test_negative_answers_are_cached_as_well(evaluator_factory, dns_server):
    evaluator = evaluator_factory(POLICY)
    raw = message(from_="a@sub.example.biz")      # no SPF at sub, no DMARC anywhere
    before = dns_server.query_count()
    run_milter(evaluator, raw, client_ip="2001:db8:12::1", mail_from="a@sub.example.biz")
    count = dns_server.query_count()
    assert count > before
    run_milter(evaluator, raw, client_ip="2001:db8:12::1", mail_from="a@sub.example.biz")
    assert dns_server.query_count() == count




@pytest.fixture
def counted_evaluator(redis_url, dns_server):
    config = make_config(POLICY, redis_url, dns_server.nameservers)
    client = redis.Redis.from_url(redis_url, decode_responses=True,
                                  connection_class=CountingConnection)
    evaluator = Evaluator(config, Store(client), Resolver.from_config(config.dns))
    # The decision's reads only: the journal's background write (one more round trip,
    # off the reply path) is counted in test_journal.py.
    evaluator.journal = None
    # a spy, not a stand-in: remembers what each decision asked the real store for
    evaluator.lookups = []
    real_lookup = evaluator.store.lookup
    evaluator.store.lookup = lambda queries: evaluator.lookups.append(queries) or real_lookup(queries)
    return evaluator


def measure(evaluator, redis_url, run):
    """Run one decision; return (client writes, Redis command counts, kinds looked up)."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    admin.config_resetstat()
    CountingConnection.writes = 0
    evaluator.lookups.clear()
    result = run()
    stats = {name[len("cmdstat_"):]: value["calls"]
             for name, value in admin.info("commandstats").items()
             if name not in ("cmdstat_info", "cmdstat_config|resetstat")}
    [queries] = evaluator.lookups                       # the store was asked once
    kinds = {kind for kind, pairs in queries.items() if pairs}
    return result, CountingConnection.writes, stats, kinds


def assert_one_round_trip(writes, stats, kinds):
    assert {"ip", "domain", "ab"} <= kinds
    assert writes == 1                                   # one pipeline: one round trip
    assert stats.pop("evalsha") == 1                     # one script call for every kind
    # the rest ran inside the Lua script, server-side (Redis counts those calls too)
    assert set(stats) <= {"smembers", "hget"}, stats


def test_all_redis_reads_of_one_decision_are_one_round_trip(counted_evaluator, redis_url,
                                                            dkim_keys):
    evaluator = counted_evaluator
    store = evaluator.store
    # entries in several sources of every kind, none of which matches this message
    store.add("ip", "feed", [("", "20010db8ffff/48", "0")])
    store.add("domain", "local", [("", "example.net", "dmarc 0")])
    store.add("domain", "partner", [("", "example.org", "any 0")])
    store.add("ab", "local", [("someone@example.org", "alice@example.com", "0")])
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    rcpts = ("user@example.org", "other@example.org", "third@example.org")
    run_milter(evaluator, raw, client_ip="2001:db8:10::99", rcpts=rcpts)   # loads the script
    result, writes, stats, kinds = measure(
        evaluator, redis_url,
        lambda: run_milter(evaluator, raw, client_ip="2001:db8:10::99", rcpts=rcpts))
    assert result.rc == Milter.TEMPFAIL
    assert_one_round_trip(writes, stats, kinds)


def test_a_whitelisted_decision_also_reads_once(counted_evaluator, redis_url, dkim_keys):
    evaluator = counted_evaluator
    ids = evaluator.store.addressbook_id
    evaluator.store.add("domain", "local", [("", "example.com", "dmarc 0")])
    evaluator.store.add("ab", "local", [(ids(normalise_address("user@example.org")),
                                         ids(normalise_address("alice@example.com")), "0")])
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    run_milter(evaluator, raw, client_ip="2001:db8:10::99")
    result, writes, stats, kinds = measure(
        evaluator, redis_url, lambda: run_milter(evaluator, raw, client_ip="2001:db8:10::99"))
    assert result.rc == Milter.ACCEPT
    assert "domain=pass(example.com" in result.header("X-MX6-Verdict")
    assert_one_round_trip(writes, stats, kinds)
