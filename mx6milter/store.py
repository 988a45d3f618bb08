"""Redis: the key schema, the one-round-trip lookup, and the writes mx6ctl makes.

Schema version 1, every key under ``<key_prefix>v1:``::

    <p>KIND:sources            set of source names that hold entries of KIND
    <p>KIND:SOURCE             hash FIELD -> VALUE          (ip, domain)
    <p>ab:SOURCE:RECIPIENT     hash SENDER -> VALUE         (addressbook)

KIND is ``ip`` (FIELD is ``HEXPREFIX/LEN``, see ``ip_field``), ``domain``
(FIELD is the A-label domain; VALUE starts with what must authenticate) or
``ab``. Every VALUE ends in the expiry as Unix seconds, 0 for never.

One source per hash lets ``replace_source`` swap a whole feed with two
RENAMEs in a MULTI, so the milter never sees a half-loaded list. The lookup
runs server-side in a Lua script (one EVALSHA per kind, all of them in one
pipeline), so a decision costs one round trip however many sources exist.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SCHEMA_VERSION = 1
KINDS = ("ip", "domain", "ab")

# ARGV[1] = "<p>KIND", then (key suffix, field) pairs; returns flat
# (source, suffix, field, value) quadruples for every hit in every source.
_LOOKUP_LUA = """
local base = ARGV[1]
local sources = redis.call('SMEMBERS', base .. ':sources')
local out = {}
for _, src in ipairs(sources) do
  for i = 2, #ARGV, 2 do
    local key = base .. ':' .. src
    if ARGV[i] ~= '' then key = key .. ':' .. ARGV[i] end
    local v = redis.call('HGET', key, ARGV[i + 1])
    if v then
      out[#out + 1] = src; out[#out + 1] = ARGV[i]
      out[#out + 1] = ARGV[i + 1]; out[#out + 1] = v
    end
  end
end
return out
"""
_LOOKUP_SHA = hashlib.sha1(_LOOKUP_LUA.encode()).hexdigest()


class StoreUnavailable(Exception):
    """Redis could not be reached in time; the caller falls back."""


@dataclass(frozen=True)
class Hit:
    kind: str
    source: str
    key: str       # the key suffix: the recipient for ab, "" otherwise
    field: str
    value: str

    @property
    def expires(self) -> int:
        return int(self.value.rsplit(" ", 1)[-1] or 0)


# --- IPv6 prefixes as hash fields -------------------------------------------------


def ip_field(network: ipaddress.IPv6Network) -> str:
    """'2001:db8::/32' -> '20010db8/32': the hex digits the prefix covers."""
    length = network.prefixlen
    digits = (length + 3) // 4
    text = f"{int(network.network_address):032x}"[:digits]
    return f"{text}/{length}"


def field_to_network(field: str) -> ipaddress.IPv6Network:
    text, length = field.split("/")
    return ipaddress.IPv6Network((int(text.ljust(32, "0"), 16), int(length)))


def ip_candidates(address: ipaddress.IPv6Address) -> list:
    """Every prefix containing the address, longest first: fields to look up."""
    value = int(address)
    fields = []
    for length in range(128, -1, -1):
        masked = (value >> (128 - length)) << (128 - length) if length else 0
        digits = (length + 3) // 4
        fields.append(f"{masked:032x}"[:digits] + f"/{length}")
    return fields


class Store:
    """Redis behind a narrow interface. Thread-safe (redis-py's pool)."""

    def __init__(self, client: redis.Redis, key_prefix: str = "mx6:",
                 addressbook_secret: bytes | None = None, clock=time.time):
        self.client = client
        self.base = f"{key_prefix}v{SCHEMA_VERSION}:"
        self.addressbook_secret = addressbook_secret
        self.clock = clock
        self._down_until = 0.0

    @classmethod
    def from_config(cls, redis_section, addressbook_secret: bytes | None = None) -> "Store":
        client = redis.Redis.from_url(
            redis_section.url,
            socket_timeout=redis_section.timeout,
            socket_connect_timeout=redis_section.timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            health_check_interval=30,
        )
        return cls(client, redis_section.key_prefix, addressbook_secret)

    # --- names ----------------------------------------------------------------

    def kind_key(self, kind: str) -> str:
        return self.base + kind

    def addressbook_id(self, address: str) -> str:
        """The address as stored: itself, or its keyed hash in privacy mode."""
        if self.addressbook_secret is None:
            return address
        return hmac.new(self.addressbook_secret, address.encode(), hashlib.sha256).hexdigest()[:32]

    # --- the decision's read ----------------------------------------------------

    def lookup(self, queries: dict) -> dict:
        """Run every lookup in one round trip.

        ``queries`` maps a kind to a list of (key suffix, field) pairs; the
        answer maps each kind to its unexpired Hits. Raises StoreUnavailable.
        """
        now = self.clock()
        if now < self._down_until:
            raise StoreUnavailable("redis marked down after a recent failure")
        kinds = [kind for kind, pairs in queries.items() if pairs]
        try:
            replies = self._run_lookup(kinds, queries)
        except redis.exceptions.NoScriptError:
            self.client.script_load(_LOOKUP_LUA)   # Redis restarted: once, then again
            try:
                replies = self._run_lookup(kinds, queries)
            except redis.exceptions.RedisError as err:
                self._mark_down(now)
                raise StoreUnavailable(str(err)) from err
        except redis.exceptions.RedisError as err:
            self._mark_down(now)
            raise StoreUnavailable(str(err)) from err
        answers = {kind: [] for kind in queries}
        for kind, flat in zip(kinds, replies):
            for i in range(0, len(flat), 4):
                hit = Hit(kind, *flat[i:i + 4])
                if hit.expires == 0 or hit.expires > now:
                    answers[kind].append(hit)
        return answers

    def _run_lookup(self, kinds: list, queries: dict) -> list:
        pipe = self.client.pipeline(transaction=False)
        for kind in kinds:
            args = [self.kind_key(kind)]
            for suffix, field in queries[kind]:
                args += [suffix, field]
            pipe.evalsha(_LOOKUP_SHA, 0, *args)
        return pipe.execute(raise_on_error=True) if kinds else []

    def _mark_down(self, now: float) -> None:
        # Fail fast for a second so a dead Redis does not cost every message a timeout.
        self._down_until = now + 1.0

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    # --- writes (mx6ctl) --------------------------------------------------------

    def _hash_key(self, kind: str, source: str, suffix: str = "") -> str:
        key = f"{self.kind_key(kind)}:{source}"
        return f"{key}:{suffix}" if suffix else key

    def add(self, kind: str, source: str, entries) -> int:
        """Add (suffix, field, value) entries; returns how many were new."""
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.kind_key(kind) + ":sources", source)
        for suffix, field, value in entries:
            pipe.hset(self._hash_key(kind, source, suffix), field, value)
        return sum(pipe.execute()[1:])

    def remove(self, kind: str, source: str | None, entries) -> int:
        """Remove (suffix, field) entries from one source, or from all."""
        sources = [source] if source else sorted(self.sources(kind))
        pipe = self.client.pipeline(transaction=False)
        for src in sources:
            for suffix, field in entries:
                pipe.hdel(self._hash_key(kind, src, suffix), field)
        return sum(pipe.execute())

    def sources(self, kind: str) -> set:
        return set(self.client.smembers(self.kind_key(kind) + ":sources"))

    def entries(self, kind: str, source: str | None = None):
        """Yield Hits for every entry of a kind (optionally one source)."""
        sources = [source] if source else sorted(self.sources(kind))
        for src in sources:
            prefix = self._hash_key(kind, src)
            for key in sorted(self._source_keys(kind, src)):
                suffix = key[len(prefix) + 1:] if kind == "ab" else ""
                for field, value in sorted(self.client.hscan_iter(key, count=1000)):
                    yield Hit(kind, src, suffix, field, value)

    def _source_keys(self, kind: str, source: str) -> list:
        prefix = self._hash_key(kind, source)
        if kind != "ab":
            return [prefix]
        return list(self.client.scan_iter(match=_glob_escape(prefix) + ":*", count=1000))

    def replace_source(self, kind: str, source: str, entries, batch: int = 10000) -> int:
        """Load a whole source under temporary keys, then swap it in atomically."""
        stamp = f"tmp{int(self.clock() * 1000)}"
        staging = f"{source}.{stamp}"
        loaded = 0
        keys = set()
        pipe = self.client.pipeline(transaction=False)
        for suffix, field, value in entries:
            key = self._hash_key(kind, staging, suffix)
            keys.add(suffix)
            pipe.hset(key, field, value)
            loaded += 1
            if loaded % batch == 0:
                pipe.execute()
        pipe.execute()
        old_keys = [key for key in self._source_keys(kind, source) if self.client.exists(key)]
        trash = [f"{self.base}trash:{stamp}:{i}" for i in range(len(old_keys))]
        swap = self.client.pipeline(transaction=True)
        for old, dead in zip(old_keys, trash):
            swap.rename(old, dead)
        for suffix in keys:
            swap.rename(self._hash_key(kind, staging, suffix), self._hash_key(kind, source, suffix))
        swap.sadd(self.kind_key(kind) + ":sources", source)
        swap.execute()
        if trash:
            self.client.unlink(*trash)   # freed in the background, not inside the swap
        return loaded

    def write_schema_marker(self) -> None:
        self.client.set(self.base + "schema", SCHEMA_VERSION)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
