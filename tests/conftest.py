"""Shared fixtures for every tier, and the tier markers.

tests/unit         no I/O: no root, no network, no servers; seconds, as any user
tests/integration  real redis-server, BIND, miltertest, the daemon as a subprocess
tests/e2e          root, Postfix, Sendmail, rspamd, IPv6 addresses on lo
tests/support      helpers (not collected): servers, harness, MTAs, miltertest scripts
tests/data         DNS zone templates

Each test is marked ``unit``, ``integration`` or ``e2e`` by its directory, so
``pytest -m unit`` equals ``pytest tests/unit``.
"""
import sys
from pathlib import Path

import pytest
import redis

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")
sys.path.insert(0, str(TESTS / "support"))

from mx6milter.config import parse_config  # noqa: E402
from mx6milter.dns import Resolver  # noqa: E402
from mx6milter.evaluate import Evaluator  # noqa: E402
from mx6milter.store import Store  # noqa: E402

from dkimkeys import DkimKeys  # noqa: E402  (tests/support, above)
from dnsserver import DnsServer  # noqa: E402
from servers import RedisClusterSet, RedisServer, SentinelSet  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Mark every test by its directory: tests/unit -> unit, and so on.

    A test file outside the three directories has no cost class: an error, not a
    test that ``-m unit`` and ``-m integration`` would both silently leave out."""
    unplaced = set()
    for item in items:
        path = Path(str(item.fspath)).resolve()
        try:
            tier = path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        else:
            unplaced.add(str(path.relative_to(TESTS.parent)))
    if unplaced:
        raise pytest.UsageError("test files outside tests/unit, tests/integration and tests/e2e "
                                "(see tests/conftest.py): " + ", ".join(sorted(unplaced)))


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def sentinel_set():
    """A primary, a replica and three sentinels, shared; a test that kills a node starts its own."""
    servers = SentinelSet().start()
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def redis_cluster():
    """A 3-primary Redis Cluster, shared; flushed by ``cluster_redis``."""
    cluster = RedisClusterSet().start()
    yield cluster
    cluster.close()


@pytest.fixture
def cluster_redis(redis_cluster):
    """The [redis] lines of a config for the (flushed) shared Cluster."""
    redis_cluster.client().flushall()
    return f"[redis]\ncluster = {redis_cluster.seeds}\n"


@pytest.fixture
def sentinel_redis(sentinel_set):
    """The [redis] lines of a config for the (flushed) shared Sentinel set."""
    redis.Redis(port=sentinel_set.current_primary_port()).flushall()
    return f"[redis]\nsentinels = {sentinel_set.sentinels}\nservice_name = {sentinel_set.service}\n"


@pytest.fixture(scope="session")
def dkim_keys():
    """RSA and Ed25519 DKIM keys, generated once per test run (tests/support/dkimkeys.py)."""
    return DkimKeys.generate()


@pytest.fixture(scope="session")
def dns_server(dkim_keys):
    """BIND serving tests/data/zones, with the public halves of ``dkim_keys`` filled in."""
    server = DnsServer(values=dkim_keys.zone_values()).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server):
    if redis_server.process is None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url


def make_config(text: str = "", redis_url: str = "redis://127.0.0.1:1/0", nameservers: str = ""):
    """A Config from INI text, pointed at the test Redis and DNS."""
    base = f"[redis]\nurl = {redis_url}\n[dns]\nnameservers = {nameservers}\ntimeout = 1\nbudget = 3\n"
    return parse_config(_merge(base, text), "test.conf")


def _merge(base: str, extra: str) -> str:
    # Later sections with the same name would be duplicates; merge by section.
    import configparser
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(base)
    parser.read_string(extra)
    return "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in parser.items(s, raw=True))
                     for s in parser.sections()) + "\n"


@pytest.fixture
def evaluator_factory(redis_url, dns_server):
    def build(text: str = "", nameservers: str | None = None):
        nameservers = dns_server.nameservers if nameservers is None else nameservers
        config = make_config(text, redis_url, nameservers)
        store = Store.from_config(config.redis)
        return Evaluator(config, store, Resolver.from_config(config.dns))
    return build
