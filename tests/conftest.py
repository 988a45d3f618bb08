
import pytest

from mx6milter.config import parse_config
from mx6milter.dns import Resolver
from mx6milter.evaluate import Evaluator
from mx6milter.store import Store

from dkimkeys import DkimKeys
from dnsserver import DnsServer
from servers import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def dkim_keys():
    """RSA and Ed25519 DKIM keys, generated once per test run (tests/dkimkeys.py)."""
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
