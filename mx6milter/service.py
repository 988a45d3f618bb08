"""The wiring: config -> store, resolver, evaluator. No pymilter here, so mx6ctl
and the tests build exactly what the daemon builds without loading libmilter."""
from __future__ import annotations

import logging
import os
import stat

from .config import Config, ConfigError, redact_url, refuse_world_writable
from .dns import Resolver
from .evaluate import Evaluator
from .metrics import Metrics
from .evidence import dkimcanon
from .membudget import JUDGING_COPIES, REASON
from .store import SCHEMA_VERSION, Store, StoreUnavailable

log = logging.getLogger("mx6milter")
# What the start-up check and mx6ctl check ask DNS. Not the root: the resolver
# answers [] for "." without asking anyone.
DNS_PROBE = ("org", "NS")


def _open_private(key: str, path: str):
    """Open a secret-holding file: refused if every user may write it, warned if every
    user may read it (OpenDKIM refuses both for keys; a readable one only leaks)."""
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {err.strerror or err}") from None
    try:
        refuse_world_writable(path, handle)
    except ConfigError:
        handle.close()
        raise
    if os.fstat(handle.fileno()).st_mode & stat.S_IROTH:
        log.warning("%s: %s is readable by every user; chmod o-r %s", key, path, path)
    return handle


def read_secret(path: str) -> bytes | None:
    if not path:
        return None
    try:
        with _open_private("[addressbook] secret_file", path) as handle:
            secret = handle.read().strip()
    except OSError as err:
        raise ConfigError(f"[addressbook] secret_file: cannot read {path}: {err}") from None
    if len(secret) < 16:
        raise ConfigError(f"[addressbook] secret_file: {path} holds fewer than 16 bytes")
    return secret


def read_redis_password(path: str, key: str = "password_file") -> str | None:
    """[redis] password_file (or sentinel_password_file, KEY): the password on its first
    line; None if not configured."""
    if not path:
        return None
    name = f"[redis] {key}"
    try:
        with _open_private(name, path) as handle:
            line = handle.read(4096).split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as err:
        raise ConfigError(f"{name}: cannot read {path}: {err.strerror or err}") from None
    if not line:
        raise ConfigError(f"{name}: {path} is empty")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not UTF-8") from None


def open_store(config: Config, command_timeout: float | None = None,
               metrics: Metrics | None = None) -> Store:
    """The Store as the daemon, its background writers and mx6ctl build it (one Redis,
    Sentinel or Cluster, per [redis]): secret and password files read now."""
    return Store.from_config(
        config.redis, read_secret(config.addressbook.secret_file),
        command_timeout=command_timeout,
        password=read_redis_password(config.redis.password_file),
        sentinel_password=read_redis_password(config.redis.sentinel_password_file,
                                              "sentinel_password_file"),
        metrics=metrics)


def build_evaluator(config: Config, metrics: Metrics | None = None) -> Evaluator:
    """What the daemon runs. METRICS: the daemon's, kept across reloads; without one
    (mx6ctl explain, tests) a private set is counted and never served."""
    # dkimpy's relaxed canonicalisation: ours peaks lower (sliced) and costs less (dkimcanon.py)
    dkimcanon.install()
    metrics = metrics or Metrics()
    store = open_store(config, metrics=metrics)
    return Evaluator(config, store, Resolver.from_config(config.dns, metrics), metrics=metrics)


def describe_redis(redis_section) -> str:
    """Where the Redis is, fit to show (no password): for logs and mx6ctl's messages."""
    def nodes(pairs) -> str:
        return " ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in pairs)
    if redis_section.sentinels:
        return (f"Sentinel service {redis_section.service_name} "
                f"(sentinels {nodes(redis_section.sentinels)})")
    if redis_section.cluster:
        return "Cluster " + nodes(redis_section.cluster)
    return redact_url(redis_section.url)


def self_check(evaluator: Evaluator) -> None:
    """Warn, never refuse: the milter must start even when Redis or DNS is down."""
    if not evaluator.store.ping():
        log.warning("startup check: Redis at %s does not answer; IPv6 mail will fall back "
                    "until it does", describe_redis(evaluator.config.redis))
    try:
        evaluator.resolver.query(*DNS_PROBE)
    except Exception as err:
        log.warning("startup check: DNS does not answer (%s); IPv6 mail will fall back "
                    "until it does", err)
    check_schema(evaluator.store)
    check_memory_budget(evaluator.config)


def check_memory_budget(config: Config) -> None:
    """Warn when the largest message kept could never be judged within the budget."""
    milter = config.milter
    if milter.max_buffered_bytes < JUDGING_COPIES * milter.max_message_size:
        log.warning("[milter] max_buffered_bytes = %d is less than %d x max_message_size "
                    "(%d): IPv6 messages near max_message_size will always fall back "
                    "(reason %s)", milter.max_buffered_bytes, JUDGING_COPIES,
                    milter.max_message_size, REASON)


def check_schema(store: Store) -> None:
    """Warn when a newer mx6milter keeps data in this Redis under a schema we do not read."""
    try:
        found = store.check_schema()
    except StoreUnavailable:
        return          # said above: Redis does not answer
    if found > SCHEMA_VERSION:
        log.warning("startup check: Redis holds schema version %d, this mx6milter reads %d: "
                    "entries written by the newer version are not seen here",
                    found, SCHEMA_VERSION)
