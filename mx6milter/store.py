"""Redis: the key schema, the one-round-trip lookup, and the writes mx6ctl makes.

Schema version 1, every key under ``<key_prefix>v1:`` but the marker
``<key_prefix>schema`` (``Store.check_schema``)::

    <p>KIND:sources            set of source names that hold entries of KIND
    <p>KIND:#lengths           set of the prefix lengths written to KIND (ip, green, asn,
                               mishandle4xx), and "tracked" once it covers every entry
    <p>KIND:SOURCE             hash FIELD -> VALUE          (ip, domain)
    <p>ab:SOURCE:RECIPIENT     hash SENDER -> VALUE         (addressbook)
    <p>history:ipv4:DOMAIN     hash "v" -> "COUNT FIRST_DAY LAST_DAY EXPIRES", with a TTL
    <p>rdap:domain:DOMAIN      string "IANA_ID REGISTERED REGISTRANT EXPIRES", with a TTL
    <p>rdap:ip:HEXPREFIX/LEN   string "ABUSE EXPIRES", with a TTL (evidence/rdap.py: an
                               RDAP answer, fetched in the background, cached for all)
    <p>registrar:SOURCE        hash IANA_ID -> EXPIRY (the stringent registrars)
    <p>ab:learned:USER         hash CORRESPONDENT -> EXPIRY, with a TTL (learnt from
                               outbound mail, at most a cap of fields, the oldest evicted)

The journal (journal.py: what became of each decision; read by mx6ctl report
and why), every key but the stream with a TTL, every list capped::

    <p>j:stream                stream of recent decisions (XADD MAXLEN ~ [report] stream_length)
    <p>j:h:HOUR                hash COUNTER -> count for one hour (HOUR = Unix time // 3600)
    <p>j:top:BOARD:HOUR        sorted set SENDER -> count, the [report] top_size largest kept
    <p>j:info:BOARD:HOUR       hash SENDER -> JSON details, for the senders in the sorted set
    <p>j:delay:HOUR            list of recovery delays in seconds, of the fallbacks of HOUR
    <p>j:fp:FINGERPRINT        "FALLBACK_TIME SENDER" of one IPv6 fallback, TTL fingerprint_days

KIND is ``ip`` (FIELD is ``HEXPREFIX/LEN``, see ``ip_field``), ``domain``
(FIELD is the A-label domain; VALUE starts with what must authenticate) or
``ab``. Every VALUE ends in the expiry as Unix seconds, 0 for never.
The greenlist's kinds (greenlist.py): ``green`` (networks, FIELD as for
``ip``), ``mishandle4xx`` (FIELD a prefix as for ``ip`` or a PTR domain),
``asn`` (the prefix-to-ASN table: FIELD a prefix, VALUE ``ASN[,ASN...]``
then the expiry), ``asnlist`` (FIELD an AS number) and ``history``
(history.py: the From domains seen authenticated over IPv4).

One source per hash lets ``load(replace=True)`` swap a whole feed: it is
loaded under staging keys (``<p>KIND:SOURCE~TOKEN...``, which no lookup
reads), then one Lua script drops the old keys and renames the staging keys
into place, so the milter never sees a half-loaded or empty list. The lookup
runs server-side in one Lua script (one EVALSHA for every kind of the
decision), so a decision costs one round trip however many sources exist.
A key of the wrong type is skipped by the lookup and reported, never fatal.

On a Redis Cluster ([redis] cluster) the same schema carries hash tags, so
that one decision touches as few shards as possible: every key but the
addressbooks' under ``{<key_prefix>v1}:`` (one slot: the whitelists, the
greenlist, the history and the RDAP cache together, so their Lua scripts run
where their keys are), and each addressbook hash as ``<p>ab:SOURCE:{RECIPIENT}``
(a recipient's books, of every source, in the recipient's slot; ``<p>ab:sources``
untagged). The decision's addressbook reads are plain HGETs pipelined with the
whitelist scripts (one round trip per shard involved). Each script declares
every key it will read (``<p>KIND:sources`` and each source's hash), so that
while ``redis-cli --cluster reshard`` moves the slot, Redis redirects (ASK) or
asks to retry (TRYAGAIN) instead of letting a script see half a slot; the
source names this needs are read at most every ``SOURCES_TTL`` seconds. Bulk loads
are split by slot, and a replace swaps each slot's keys in one script: atomic
per slot, not across the cluster. A single Redis and Sentinel use the untagged
names above; moving to a Cluster means ``mx6ctl export`` then ``import``.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from .entries import check_source, value_expiry

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("mx6milter")

SCHEMA_VERSION = 1
KINDS = ("ip", "domain", "ab", "green", "asn", "asnlist", "mishandle4xx", "history", "registrar")
PREFIX_KINDS = ("ip", "green", "asn", "mishandle4xx")     # fields are IPv6 prefixes (some or all)
ADDRESS_QUERY = "#address"      # the key suffix of address_query's pair (no real suffix has "#")
_PREFIX_FIELD = re.compile(r"[0-9a-f]{0,32}/([0-9]{1,3})")
STAGING_TTL = 86400     # staging keys of an interrupted replace vanish by themselves
REPLICA_WAIT_MS = 5000  # Sentinel: how long a replace waits for a replica's copy
SOURCES_TTL = 5.0       # Cluster: how long the source names read are reused

# One script answers every kind of a decision (one EVALSHA, however many kinds).
# Its one argument is packed (see _pack: each string as "LEN:BYTES", because
# redis-py's per-argument packing was once half the CPU time of a decision): per
# kind the four strings WHAT, BASE, ADDRESS, PAIRS. WHAT names the lookup: "L" a
# whitelist or greenlist kind, "A" the ASN table with the ASN lists chained to it,
# "R" the RDAP cache with the registrar lists. BASE is "<p>KIND" ("<p>" for "R").
# ADDRESS, when not empty, is an IPv6 address as 32 hex digits (address_query):
# its prefixes are looked up, longest first, computed here for the lengths in
# BASE:#lengths (every length from 128 to 0 while that set lacks the member
# "tracked"). PAIRS packs the (key suffix, field) pairs, unpacked only for a kind
# that has sources at all. Returns one {flat (source, suffix, field, value)
# quadruples of every hit, BAD} per kind.
#
# A key of the wrong type (a source named "sources" let in by an older version, a
# key written by hand) must not fail the whole lookup, and with it all IPv6 mail:
# redis.pcall turns its WRONGTYPE into a value; the source is skipped and its key
# returned in BAD, which the Store logs once.
_DECISION_LUA = """
local BAD = {}
local function members(key)
  local m = redis.pcall('SMEMBERS', key)
  if m.err then BAD[#BAD + 1] = key; return {} end
  return m
end
local function hget(key, field)
  local v = redis.pcall('HGET', key, field)
  if type(v) == 'table' and v.err then BAD[#BAD + 1] = key; return nil, true end
  return v, false
end
local function emit(out, src, suffix, field, value)
  out[#out + 1] = src; out[#out + 1] = suffix; out[#out + 1] = field; out[#out + 1] = value
end
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then BAD[#BAD + 1] = key; return nil end
  return v
end
local function address_pairs(Q, base, hex)
  local lengths, seen = {}, {}
  local found = redis.pcall('SMEMBERS', base .. ':#lengths')
  if found.err then found = {} end
  for _, m in ipairs(found) do seen[m] = true end
  if seen['tracked'] then
    for _, m in ipairs(found) do
      local n = tonumber(m)
      if n and n >= 0 and n <= 128 and n % 1 == 0 then lengths[#lengths + 1] = n end
    end
    table.sort(lengths, function(a, b) return a > b end)
  else
    for n = 128, 0, -1 do lengths[#lengths + 1] = n end
  end
  for _, n in ipairs(lengths) do
    local text, rest = string.sub(hex, 1, math.floor((n + 3) / 4)), n % 4
    if rest ~= 0 then
      local digit = tonumber(string.sub(text, -1), 16)
      digit = digit - digit % (2 ^ (4 - rest))
      text = string.sub(text, 1, -2) .. string.format('%x', digit)
    end
    Q[#Q + 1] = ''; Q[#Q + 1] = text .. '/' .. n
  end
end
local function unpack(packed)
  local items, pos = {}, 1
  while pos <= #packed do
    local colon = string.find(packed, ':', pos, true)
    local n = tonumber(string.sub(packed, pos, colon - 1))
    items[#items + 1] = string.sub(packed, colon + 1, colon + n)
    pos = colon + n + 1
  end
  return items
end
local function unpack_pairs(base, packed, hex)
  local Q = {}
  if hex ~= '' then address_pairs(Q, base, hex) end
  for _, text in ipairs(unpack(packed)) do Q[#Q + 1] = text end
  return Q
end

local function lookup(base, packed, hex)
  local out = {}
  local sources = members(base .. ':sources')
  if #sources == 0 then return out end
  local Q = unpack_pairs(base, packed, hex)
  for _, src in ipairs(sources) do
    for i = 1, #Q, 2 do
      local key = base .. ':' .. src
      if Q[i] ~= '' then key = key .. ':' .. Q[i] end
      local v, bad = hget(key, Q[i + 1])
      if bad and Q[i] == '' then break end
      if v then emit(out, src, Q[i], Q[i + 1], v) end
    end
  end
  return out
end

-- The prefix-to-ASN hits as above, then for each origin ASN in them the ASN
-- greenlist's hits ("<p>asnlist:SOURCE" FIELD ASN) with key suffix "list"; the
-- lists' names are read only once an ASN is found.
local function asn(base, packed, hex)
  local out, seen, badlist, lists = {}, {}, {}, nil
  local sources = members(base .. ':sources')
  if #sources == 0 then return out end
  local Q = unpack_pairs(base, packed, hex)
  for _, src in ipairs(sources) do
    for i = 1, #Q, 2 do
      local v, bad = hget(base .. ':' .. src, Q[i + 1])
      if bad then break end
      if v then
        emit(out, src, '', Q[i + 1], v)
        for number in string.gmatch(string.match(v, '^%S+') or '', '%d+') do
          if not seen[number] then
            seen[number] = true
            lists = lists or members(base .. 'list:sources')
            for _, list in ipairs(lists) do
              if not badlist[list] then
                local w, wbad = hget(base .. 'list:' .. list, number)
                if wbad then badlist[list] = true end
                if w then emit(out, list, 'list', number, w) end
              end
            end
          end
        end
      end
    end
  end
  return out
end

-- The RDAP cache: (DOMAIN, "domain") reads <p>rdap:domain:DOMAIN and, for the IANA
-- Registrar ID its value starts with, every registrar list (key suffix "registrar");
-- ("", FIELD) reads <p>rdap:ip:FIELD.
local function rdap(base, packed, hex)
  local out = {}
  local Q = unpack_pairs(base, packed, hex)
  for i = 1, #Q, 2 do
    if Q[i + 1] == 'domain' then
      local v = get(base .. 'rdap:domain:' .. Q[i])
      if v then
        emit(out, 'domain', Q[i], 'v', v)
        local id = string.match(v, '^(%d+) ')
        if id then
          for _, src in ipairs(members(base .. 'registrar:sources')) do
            local w = hget(base .. 'registrar:' .. src, id)
            if w then emit(out, src, 'registrar', id, w) end
          end
        end
      end
    else
      local v = get(base .. 'rdap:ip:' .. Q[i + 1])
      if v then emit(out, 'ip', '', Q[i + 1], v) end
    end
  end
  return out
end

local RUN = {L = lookup, A = asn, R = rdap}
local replies, groups = {}, unpack(ARGV[1])
for g = 1, #groups, 4 do
  BAD = {}
  local out = RUN[groups[g]](groups[g + 1], groups[g + 3], groups[g + 2])
  replies[#replies + 1] = {out, BAD}
end
return replies
"""
_DECISION_SHA = hashlib.sha1(_DECISION_LUA.encode()).hexdigest()
_LOOKUP_KIND = {"asn": "A", "rdap": "R"}     # every other kind: "L"

# Bulk writes, one batch per call. ARGV = live base ("<p>KIND:SOURCE"), staging
# base ("" = write to the live keys), staging TTL, the kind's prefix lengths set
# ("<p>KIND:#lengths", "" for a kind of no prefixes), then (suffix, field, value)
# triples. The length of every field written as a prefix ("HEX/LEN") joins that
# set, staged or not (a length too many costs a lookup one HGET, a length
# missing would lose a hit). Returns
# {added, present, repeated}: new to the live list, already in it, or seen
# earlier in this same load (staging only).
_LOAD_LUA = """
local live, staging, ttl, lengths = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local added, present, repeated = 0, 0, 0
for i = 5, #ARGV, 3 do
  local suffix, field = ARGV[i], ARGV[i + 1]
  local lkey = live
  if suffix ~= '' then lkey = live .. ':' .. suffix end
  local target = lkey
  if staging ~= '' then
    target = staging
    if suffix ~= '' then target = staging .. ':' .. suffix end
  end
  if staging ~= '' and redis.call('HEXISTS', target, field) == 1 then
    repeated = repeated + 1
  elseif redis.call('HEXISTS', lkey, field) == 1 then
    present = present + 1
  else
    added = added + 1
  end
  local fresh = staging ~= '' and redis.call('EXISTS', target) == 0
  local length = lengths ~= '' and string.match(field, '^%x*/(%d+)$')
  if length then redis.call('SADD', lengths, length) end
  redis.call('HSET', target, field, ARGV[i + 2])
  if fresh then redis.call('EXPIRE', target, ttl) end
end
return {added, present, repeated}
"""
_LOAD_SHA = hashlib.sha1(_LOAD_LUA.encode()).hexdigest()

# The swap of a replace, atomic because it is one script. ARGV = sources key,
# source, N, N old live keys, then (staging, live) pairs. Checks every staging
# key first, so a lost one (expired, deleted) aborts before anything changed;
# UNLINK frees the old hashes in the background. Returns the old entry count.
_SWAP_LUA = """
local n = tonumber(ARGV[3])
for i = 4 + n, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[i]) == 0 then
    return redis.error_reply('replace aborted, list unchanged: staging key ' .. ARGV[i] .. ' is gone')
  end
end
local old = 0
for i = 4, 3 + n do
  old = old + redis.call('HLEN', ARGV[i])
  redis.call('UNLINK', ARGV[i])
end
for i = 4 + n, #ARGV, 2 do
  redis.call('RENAME', ARGV[i], ARGV[i + 1])
  redis.call('PERSIST', ARGV[i + 1])
end
if ARGV[1] ~= '' then redis.call('SADD', ARGV[1], ARGV[2]) end
return old
"""
_SWAP_SHA = hashlib.sha1(_SWAP_LUA.encode()).hexdigest()


# The IPv4 history's count (evidence/history.py). KEYS[1] = the domain's hash,
# KEYS[2] = the kind's sources set;
# ARGV = today (days since the epoch), expiry (Unix seconds), TTL (seconds),
# source name. Read-modify-write in one script, so concurrent writers add up.
_HISTORY_LUA = """
local day = tonumber(ARGV[1])
local count, first, last = 0, day, day
local v = redis.call('HGET', KEYS[1], 'v')
if v then
  local c, f, l = string.match(v, '^(%d+) (%d+) (%d+) ')
  if c then
    count = tonumber(c)
    first = math.min(tonumber(f), day)
    last = math.max(tonumber(l), day)
  end
end
count = count + 1
redis.call('HSET', KEYS[1], 'v', string.format('%d %d %d %s', count, first, last, ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return count
"""



# The learnt addressbook of one user. KEYS[1] the hash, KEYS[2] the kind's sources
# set; ARGV: expiry (the value), TTL, cap, source, then the correspondents. Past
# the cap the fields with the smallest expiry (written to least recently) go.
# Returns how many were evicted.
_LEARN_LUA = """
for i = 5, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[4]) end
local over = redis.call('HLEN', KEYS[1]) - tonumber(ARGV[3])
if over <= 0 then return 0 end
local all, fields = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #all, 2 do
  fields[#fields + 1] = {tonumber(string.match(all[i + 1], '(%d+)$') or '0') or 0, all[i]}
end
table.sort(fields, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
for i = 1, over do redis.call('HDEL', KEYS[1], fields[i][2]) end
return over
"""
_LEARN_SHA = hashlib.sha1(_LEARN_LUA.encode()).hexdigest()

# One sender counted on a capped board. KEYS[1] = the sorted set, KEYS[2] = its
# details hash; ARGV = member, details JSON, cap, TTL. Beyond the cap the
# smallest counts go, with their details, so a spray of senders stays bounded.
_TOP_LUA = """
redis.call('ZINCRBY', KEYS[1], 1, ARGV[1])
local cap = tonumber(ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  local gone = redis.call('ZRANGE', KEYS[1], 0, n - cap - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  for _, m in ipairs(gone) do redis.call('HDEL', KEYS[2], m) end
end
if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
"""

_TOP_SHA = hashlib.sha1(_TOP_LUA.encode()).hexdigest()
HOUR = 3600
MAX_DELAYS = 10000      # recovery delays kept per hour for the percentiles


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
        return value_expiry(self.value)


@dataclass
class LoadResult:
    """What a bulk load did, counted by Redis itself."""
    added: int = 0        # entries new to the list
    present: int = 0      # entries the list already had (value rewritten)
    repeated: int = 0     # entries given more than once in this load
    removed: int = 0      # replace only: old entries not in the new list

    @property
    def loaded(self) -> int:
        return self.added + self.present + self.repeated


class EmptyReplace(ValueError):
    """A replace with no entries at all; refused unless explicitly allowed."""


class Store:
    """Redis behind a narrow interface. Thread-safe (redis-py's pool)."""

    def __init__(self, client: redis.Redis, key_prefix: str = "mx6:",
                 addressbook_secret: bytes | None = None, clock=time.time,
                 cluster: bool = False, read_client: redis.Redis | None = None,
                 replicated: bool = False, metrics: Metrics | None = None):
        self.client = client
        self.metrics = metrics   # the daemon's counters; None: not counted (mx6ctl, tests)
        self._read_client = read_client                # a replica's, with read_from_replicas
        self.cluster = cluster
        self.replicated = replicated      # Sentinel: a replace waits for a replica's copy
        self.marker = f"{key_prefix}schema"
        version = f"{key_prefix}v{SCHEMA_VERSION}"
        self.base = f"{{{version}}}:" if cluster else f"{version}:"
        self.ab_key = f"{version}:ab"     # untagged on a Cluster: the recipient in it is the tag
        self._sources: tuple = (0.0, {})            # Cluster: (read at, kind -> its sources)
        self.addressbook_secret = addressbook_secret
        self.clock = clock
        self._down_until = 0.0
        self._bad_keys_reported: set = set()   # keys of the wrong type, logged once each
        self._history_script = client.register_script(_HISTORY_LUA)

    @classmethod
    def from_config(cls, redis_section, addressbook_secret: bytes | None = None,
                    command_timeout: float | None = None, password: str | None = None,
                    sentinel_password: str | None = None,
                    metrics: Metrics | None = None) -> "Store":
        """The one way to a Redis: a single server, the primary Sentinel names, or a Cluster.

        ``command_timeout`` overrides [redis] timeout for replies (mx6ctl's bulk writes);
        ``password`` is [redis] password_file's (config.py refuses one in the URL too),
        ``sentinel_password`` sentinel_password_file's. With sentinels or cluster, the
        URL gives only the database, user, password and TLS."""
        options = dict(socket_timeout=command_timeout or redis_section.timeout,
                       socket_connect_timeout=redis_section.timeout,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)
        if not (redis_section.sentinels or redis_section.cluster):
            client = redis.Redis.from_url(redis_section.url, password=password,
                                          health_check_interval=30, **options)
            return cls(client, redis_section.key_prefix, addressbook_secret, metrics=metrics)
        url = parse_url(redis_section.url)
        options.update(username=url.get("username"), password=password or url.get("password"))
        if redis_section.url.startswith("rediss://"):
            options["ssl"] = True
        if redis_section.cluster:
            from redis.cluster import ClusterNode, RedisCluster
            nodes = [ClusterNode(host, port) for host, port in redis_section.cluster]
            # redis-py follows MOVED and ASK itself, and re-reads the slots after a failure.
            cluster = RedisCluster(startup_nodes=nodes, **_script_routing(), **options)
            return cls(cluster, redis_section.key_prefix, addressbook_secret, cluster=True,
                       metrics=metrics)
        from redis.sentinel import Sentinel
        sentinel = Sentinel(list(redis_section.sentinels), db=url.get("db", 0),
                            sentinel_kwargs={"password": sentinel_password,
                                             "socket_timeout": redis_section.timeout,
                                             "socket_connect_timeout": redis_section.timeout},
                            **options)
        # Each new connection asks the sentinels for the primary; one to a primary
        # demoted since is dropped (redis-py's SentinelManagedConnection).
        primary = sentinel.master_for(redis_section.service_name)
        replica = sentinel.slave_for(redis_section.service_name) \
            if redis_section.read_from_replicas else None
        return cls(primary, redis_section.key_prefix, addressbook_secret, read_client=replica,
                   replicated=True, metrics=metrics)

    @property
    def read_client(self) -> redis.Redis:
        """Where the decision's lookups go: a replica with read_from_replicas, else the primary."""
        return self._read_client or self.client

    # --- names ----------------------------------------------------------------

    def kind_key(self, kind: str) -> str:
        return self.ab_key if kind == "ab" else self.base + kind

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
        started = time.monotonic()
        try:
            try:
                replies = self._run_lookup(kinds, queries)
            except redis.exceptions.NoScriptError:
                self.read_client.script_load(_DECISION_LUA)    # Redis restarted: once, again
                replies = self._run_lookup(kinds, queries)
        except redis.exceptions.RedisError as err:
            self._mark_down()
            if self.metrics is not None:
                self.metrics.redis_errors.inc()
            raise StoreUnavailable(str(err)) from err
        if self.metrics is not None and kinds:
            self.metrics.redis_seconds.observe(time.monotonic() - started)
        answers: dict = {kind: [] for kind in queries}
        for kind, (flat, bad) in zip(kinds, replies):
            self._report_bad_keys(bad)
            for i in range(0, len(flat), 4):
                hit = Hit(kind, *flat[i:i + 4])
                if hit.expires == 0 or hit.expires > now:
                    answers[kind].append(hit)
        return answers

    def _report_bad_keys(self, keys) -> None:
        for key in keys:
            if key not in self._bad_keys_reported:
                self._bad_keys_reported.add(key)
                log.warning("Redis key %s is not of the type the schema expects (left by an older "
                            "version, or written by hand?); lookups skip it. Inspect it with "
                            "redis-cli TYPE, then fix or delete it (and SREM the source from "
                            "the kind's :sources set)", key)

    def _run_lookup(self, kinds: list, queries: dict) -> list:
        """One round trip: one EVALSHA of _DECISION_LUA for every kind. On a Cluster it is
        pipelined with the addressbooks' plain HGETs (their keys live in the recipients'
        slots), and the script declares every key it reads, so it runs on the shard of
        their one slot; elsewhere no key is declared (the milter's ACL user only reads the
        lists, and a declared key would need write permission). Not EVALSHA_RO: redis-py
        would ask the server for its keys."""
        scripted = [kind for kind in kinds if not (kind == "ab" and self.cluster)]
        groups: list = []
        for kind in scripted:
            address = next((f for s, f in queries[kind] if s == ADDRESS_QUERY), "")
            pairs = [text for s, f in queries[kind] if s != ADDRESS_QUERY for text in (s, f)]
            groups += [_LOOKUP_KIND.get(kind, "L"), self.base if kind == "rdap" else self.kind_key(kind),
                       address, _pack(pairs)]
        if not self.cluster:
            return self.read_client.execute_command("EVALSHA", _DECISION_SHA, 0, _pack(groups)) \
                if groups else []
        pipe = _pipeline(self.read_client)
        if groups:
            declared: dict = {}           # ordered and without repeats
            for kind in scripted:
                declared.update(dict.fromkeys(self._script_keys(kind, queries[kind])))
            _evalsha(pipe, _DECISION_SHA, list(declared), _pack(groups))
        gets = []
        if len(scripted) < len(kinds):
            gets = [(src, suffix, field) for src in self._cluster_sources()["ab"]
                    for suffix, field in queries["ab"]]
            for src, suffix, field in gets:
                pipe.hget(self.key("ab", src, suffix), field)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not _wrong_type(reply):
                raise reply
        answers = dict(zip(scripted, replies[0])) if groups else {}
        if len(scripted) < len(kinds):
            answers["ab"] = self._ab_hits(gets, replies[1 if groups else 0:])
        return [answers[kind] for kind in kinds]

    def _ab_hits(self, gets: list, values: list) -> list:
        """A Cluster's addressbook HGETs as a lookup script would have answered: [flat, bad]."""
        flat: list = []
        bad: list = []
        for (src, suffix, field), value in zip(gets, values):
            if isinstance(value, Exception):
                bad.append(self.key("ab", src, suffix))
            elif value is not None:
                flat += [src, suffix, field, value]
        return [flat, bad]

    def _cluster_sources(self) -> dict:
        """Every kind's source names, read again after SOURCES_TTL seconds (a Cluster)."""
        read_at, sources = self._sources
        if time.monotonic() - read_at >= SOURCES_TTL or not read_at:
            pipe = _pipeline(self.read_client)
            for kind in KINDS:
                pipe.smembers(self.kind_key(kind) + ":sources")
            sources = {kind: sorted(found) for kind, found in zip(KINDS, pipe.execute())}
            self._sources = (time.monotonic(), sources)
        return sources

    def _script_keys(self, kind: str, pairs: list) -> list:
        """The keys a lookup script of KIND will read, declared so that a Cluster runs it
        where they all are (the first routes it; all share the {<p>v1} slot)."""
        sources = self._cluster_sources()
        if kind == "rdap":
            keys = [self.rdap_key("domain", s) if f == "domain" else self.rdap_key("ip", f)
                    for s, f in pairs]
            return keys + self._source_hashes("registrar", sources, [""])
        suffixes = {"" if suffix == ADDRESS_QUERY else suffix for suffix, _ in pairs}
        keys = self._source_hashes(kind, sources, sorted(suffixes))
        if kind in PREFIX_KINDS:
            keys.append(self._lengths_key(kind))
        if kind == "asn":
            keys += self._source_hashes("asnlist", sources, [""])
        return keys

    def _source_hashes(self, kind: str, sources: dict, suffixes: list) -> list:
        return [self.kind_key(kind) + ":sources"] + [
            self.key(kind, src, suffix) for src in sources.get(kind, []) for suffix in suffixes]

    def _mark_down(self) -> None:
        # Fail fast for a second so a dead Redis does not cost every message a timeout.
        # From the failure, not the start: a timeout may itself last a second or more.
        self._down_until = self.clock() + 1.0

    def record_history(self, kind: str, source: str, domain: str, day: int, expires: int,
                       ttl: int) -> int:
        """Count one message of DOMAIN on DAY in KIND's SOURCE (a hash with a TTL);
        returns the new count. Raises StoreUnavailable."""
        try:
            return int(self._history_script(
                keys=[self.key(kind, source, domain), self.kind_key(kind) + ":sources"],
                args=[day, expires, ttl, source]))
        except redis.exceptions.RedisError as err:
            if self.metrics is not None:
                self.metrics.redis_errors.inc()
            raise StoreUnavailable(str(err)) from err

    def learn_addressbooks(self, source: str, books: dict, expires: int, ttl: int,
                           cap: int) -> int:
        """Add correspondents to users' addressbooks in SOURCE, one pipeline for all:
        BOOKS maps a user id to its correspondent ids (as ``addressbook_id`` gives
        them). Each value is EXPIRES, each hash lives TTL seconds from now and holds
        at most CAP fields. Returns how many were evicted. Raises StoreUnavailable."""
        sources_key = self.kind_key("ab") + ":sources"

        def run() -> list:
            pipe = _pipeline(self.client)
            if self.cluster:    # in its own slot: added apart from the users' hashes
                pipe.sadd(sources_key, source)
            for user, correspondents in books.items():
                keys = [self.key("ab", source, user)] + ([] if self.cluster else [sources_key])
                _evalsha(pipe, _LEARN_SHA, keys, expires, ttl, cap, source, *correspondents)
            replies = pipe.execute(raise_on_error=True)
            return replies[1:] if self.cluster else replies
        try:
            try:
                replies = run()
            except redis.exceptions.NoScriptError:     # Redis restarted: load, then once more
                self.client.script_load(_LEARN_LUA)
                replies = run()
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err
        return sum(int(n) for n in replies)

    def cache_rdap(self, kind: str, name: str, value: str, ttl: int) -> None:
        """Cache an RDAP result: KIND "domain" (NAME a domain) or "ip" (NAME a prefix
        field), for TTL seconds. Raises StoreUnavailable."""
        try:
            self.client.set(self.rdap_key(kind, name), value, ex=ttl)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err

    def read_value(self, kind: str, source: str, suffix: str, field: str) -> str | None:
        """One entry's value, or None. Raises StoreUnavailable."""
        try:
            return self.client.hget(self.key(kind, source, suffix), field)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err

    # --- the journal (journal.py writes, mx6ctl report and why read) -----------------

    def _j(self, *parts) -> str:
        return self.base + "j:" + ":".join(str(part) for part in parts)

    def record_decision(self, now: float, entry: dict, counters, boards, fingerprint,
                        limits) -> None:
        """One decision, in one pipelined round trip: the stream entry, the hour's
        COUNTERS, each (board, sender, details JSON) of BOARDS, and FINGERPRINT
        (fingerprint, sender) of a fallback or None. LIMITS is [report]. Raises
        StoreUnavailable."""
        self._with_scripts(lambda pipe: self._queue_decision(pipe, now, entry, counters, boards,
                                                             fingerprint, limits))

    def _queue_decision(self, pipe, now, entry, counters, boards, fingerprint, limits) -> None:
        hour = int(now // HOUR)
        ttl = limits.retention_days * 86400
        pipe.xadd(self._j("stream"), entry, maxlen=limits.stream_length, approximate=True)
        for counter in counters:
            pipe.hincrby(self._j("h", hour), counter, 1)
        pipe.expire(self._j("h", hour), ttl)
        for board, sender, details in boards:
            self._count_sender(pipe, board, hour, sender, details, limits.top_size, ttl)
        if fingerprint is not None:
            digest, sender = fingerprint
            pipe.set(self._j("fp", digest), f"{now:.0f} {sender}",
                     ex=limits.fingerprint_days * 86400, nx=True)

    def _count_sender(self, pipe, board, hour, sender, details, cap, ttl) -> None:
        pipe.evalsha(_TOP_SHA, 2, self._j("top", board, hour), self._j("info", board, hour),
                     sender, details, cap, ttl)

    def _with_scripts(self, fill) -> None:
        """Run the pipeline FILL builds. EVALSHA by hand: redis-py's registered scripts
        cost a SCRIPT EXISTS round trip on every pipeline. When the script is missing
        (first use, Redis restarted) it is loaded and only the script calls run again."""
        pipe = self.client.pipeline(transaction=False)
        fill(pipe)
        commands = list(pipe.command_stack)
        replies = self._execute(pipe, raise_on_error=False)
        missing = [command for command, reply in zip(commands, replies)
                   if isinstance(reply, redis.exceptions.NoScriptError)]
        failed = [reply for reply in replies if isinstance(reply, Exception)
                  and not isinstance(reply, redis.exceptions.NoScriptError)]
        if failed:
            raise StoreUnavailable(str(failed[0]))
        if missing:
            retry = self.client.pipeline(transaction=False)
            retry.script_load(_TOP_LUA)
            for args, options in missing:
                retry.execute_command(*args, **options)
            self._execute(retry)

    def recover(self, digest: str, now: float, limits) -> tuple | None:
        """The IPv4 arrival of a message: if FINGERPRINT was left by an IPv6 fallback,
        count it recovered (once, whichever MX host sees it) in the fallback's hour;
        returns (delay seconds, sender) or None. Raises StoreUnavailable."""
        try:
            value = self.client.getdel(self._j("fp", digest))
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err
        if not value:
            return None
        stamp, _, sender = value.partition(" ")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return None                   # not written by us: nothing to count
        fallen = float(stamp)
        delay = max(0.0, now - fallen)
        hour, ttl = int(fallen // HOUR), limits.retention_days * 86400

        def fill(pipe):
            pipe.hincrby(self._j("h", hour), "recovered", 1)
            pipe.expire(self._j("h", hour), ttl)
            pipe.rpush(self._j("delay", hour), f"{delay:.0f}")
            pipe.ltrim(self._j("delay", hour), -MAX_DELAYS, -1)
            pipe.expire(self._j("delay", hour), ttl)
            self._count_sender(pipe, "recovered", hour, sender, "", limits.top_size, ttl)
        self._with_scripts(fill)
        return delay, sender

    def journal_counters(self, hours) -> dict:
        """COUNTER -> count, summed over HOURS."""
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(self._j("h", hour))
        totals: dict = {}
        for counts in self._execute(pipe):
            for name, count in counts.items():
                totals[name] = totals.get(name, 0) + int(count)
        return totals

    def journal_board(self, board: str, hours) -> dict:
        """SENDER -> (count over HOURS, its newest details JSON or "")."""
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.zrange(self._j("top", board, hour), 0, -1, withscores=True)
            pipe.hgetall(self._j("info", board, hour))
        replies = self._execute(pipe)
        out: dict = {}
        for members, details in zip(replies[::2], replies[1::2]):    # oldest hour first
            for sender, score in members:
                count, old = out.get(sender, (0, ""))
                out[sender] = (count + int(score), details.get(sender) or old)
        return out

    def journal_delays(self, hours) -> list:
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.lrange(self._j("delay", hour), 0, -1)
        return [float(d) for delays in self._execute(pipe) for d in delays
                if d.isascii() and d.isdigit()]

    def journal_recent(self, count: int, page: int = 500):
        """Yield the newest COUNT decisions, newest first, as (stream id, fields), a page
        at a time. Raises StoreUnavailable."""
        newest, seen = "+", 0
        while seen < count:
            try:
                entries = self.client.xrevrange(self._j("stream"), max=newest,
                                                count=min(page, count - seen))
            except redis.exceptions.RedisError as err:
                raise StoreUnavailable(str(err)) from err
            if not entries:
                return
            yield from entries
            seen += len(entries)
            newest = "(" + entries[-1][0]

    def _execute(self, pipe, raise_on_error: bool = True) -> list:
        try:
            return pipe.execute(raise_on_error=raise_on_error)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err

    def used_memory(self) -> int | None:
        """Redis' used_memory in bytes (a Cluster's: the sum over its nodes), for mx6ctl stats."""
        if self.cluster:
            info = self.client.info("memory", target_nodes=self.client.PRIMARIES)
            return sum(node.get("used_memory", 0) for node in info.values())
        return self.client.info("memory").get("used_memory")

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    # --- writes (mx6ctl) --------------------------------------------------------

    def rdap_key(self, kind: str, name: str) -> str:
        return f"{self.base}rdap:{kind}:{name}"

    def key(self, kind: str, source: str, suffix: str = "") -> str:
        """The name of the hash holding KIND's entries of SOURCE (and key SUFFIX)."""
        return _join(f"{self.kind_key(kind)}:{source}", self._tagged(kind, suffix))

    def _tagged(self, kind: str, suffix: str) -> str:
        """A key suffix as written: on a Cluster an addressbook's recipient is its hash tag."""
        return f"{{{suffix}}}" if suffix and self.cluster and kind == "ab" else suffix

    def add(self, kind: str, source: str, entries) -> int:
        """Add (suffix, field, value) entries; returns how many were new."""
        return self.load(kind, source, entries).added

    def load(self, kind: str, source: str, entries, replace: bool = False,
             allow_empty: bool = True, batch: int = 1000, window: int = 8) -> LoadResult:
        """Write (suffix, field, value) entries in pipelined batches.

        With ``replace`` the entries become the whole source: they are loaded
        under staging keys and swapped in by one atomic script, so readers see
        the old list or the new one, never a mix, a part or nothing. Writes to
        the same source made by others during a replace may be lost.
        """
        check_source(source)
        for script in (_LOAD_LUA, _SWAP_LUA):     # then run by hash, in pipelines
            self.client.script_load(script)
        staging = f"{self.key(kind, source)}~{secrets.token_hex(6)}" if replace else ""
        suffixes = set()
        result = LoadResult()
        if kind in PREFIX_KINDS:
            self._track_lengths(kind)
        if not replace:
            self.client.sadd(self.kind_key(kind) + ":sources", source)
        try:
            try:
                self._load_batches(kind, source, staging, entries, suffixes, result, batch, window)
            except redis.exceptions.ConnectionError as err:    # a failover, a dead primary
                if not replace:
                    raise
                raise StoreUnavailable(f"replace of {kind} source {source!r} aborted while "
                                       f"loading; the list is unchanged, run it again ({err})") from err
            if replace:
                if not suffixes and not allow_empty:
                    raise EmptyReplace(f"no entries: refusing to empty {kind} source {source!r}")
                old = self._swap_reported(kind, source, staging, suffixes)
                result.removed = max(0, old - result.present)
        except BaseException:
            if staging and suffixes:   # best effort; STAGING_TTL cleans up otherwise
                try:
                    self.client.unlink(*(_join(staging, s) for s in suffixes))
                except redis.exceptions.RedisError:
                    pass
            raise
        return result

    def _lengths_key(self, kind: str) -> str:
        return self.kind_key(kind) + ":#lengths"

    def _track_lengths(self, kind: str) -> None:
        """Make sure KIND's set of prefix lengths covers every entry, before a write.

        Written by every load (_LOAD_LUA) once it holds the member "tracked"; until
        then a lookup tries every length. A kind without sources starts tracked; one
        filled by an older version has its fields read once, here."""
        key = self._lengths_key(kind)
        if self.client.sismember(key, "tracked"):
            return
        lengths = set()
        for src in self.sources(kind):
            for hash_key in self._source_keys(kind, src):
                for field, _ in self.client.hscan_iter(hash_key, count=1000):
                    match = _PREFIX_FIELD.fullmatch(field)
                    if match:
                        lengths.add(match.group(1))
        self.client.sadd(key, "tracked", *lengths)

    def _load_batches(self, kind, source, staging, entries, suffixes, result, batch, window):
        """Pipelined script calls of up to BATCH entries; on a Cluster one call covers
        one addressbook (one slot), so a new recipient starts a new call."""
        live = self.key(kind, source)
        lengths = self._lengths_key(kind) if kind in PREFIX_KINDS else ""
        split = self.cluster and kind == "ab"
        pipe = _pipeline(self.client)
        args: list = []
        queued = 0
        for suffix, field, value in entries:
            suffix = self._tagged(kind, suffix)
            if split and args and args[-3] != suffix:
                self._load_call(pipe, live, staging, lengths, args)
                args, queued = [], queued + 1
            if staging:
                suffixes.add(suffix)
            args += (suffix, field, value)
            if len(args) >= 3 * batch:
                self._load_call(pipe, live, staging, lengths, args)
                args, queued = [], queued + 1
            if queued >= window:
                self._count(pipe.execute(), result)
                queued = 0
        if args:
            self._load_call(pipe, live, staging, lengths, args)
        self._count(pipe.execute(), result)

    @staticmethod
    def _load_call(pipe, live: str, staging: str, lengths: str, args: list) -> None:
        # The key declared is one the call writes: a Cluster routes the call by it.
        _evalsha(pipe, _LOAD_SHA, [_join(live, args[0])], live, staging, STAGING_TTL, lengths,
                 *args)

    @staticmethod
    def _count(replies, result: LoadResult) -> None:
        for added, present, repeated in replies:
            result.added += added
            result.present += present
            result.repeated += repeated

    def _swap_reported(self, kind: str, source: str, staging: str, suffixes: set) -> int:
        try:
            old = self._swap(kind, source, staging, suffixes)
            # Replication is asynchronous: a primary that dies before a replica has the
            # swap takes it along. Say so rather than report a replace that may be lost.
            if self.replicated and not self.client.wait(1, REPLICA_WAIT_MS):
                log.warning("replace of %s source %r: no replica confirmed the new list within "
                            "%d ms; should the primary fail now, check the list after the "
                            "failover", kind, source, REPLICA_WAIT_MS)
            return old
        except redis.exceptions.ConnectionError as err:
            whole = ("on a Cluster some slots may hold the new entries" if self.cluster else
                     "it holds the old list or the new one, whole")
            raise StoreUnavailable(f"replace of {kind} source {source!r}: the connection was lost "
                                   f"during the swap ({err}); {whole}: check with list, or run it "
                                   "again") from err

    def _swap(self, kind: str, source: str, staging: str, suffixes: set) -> int:
        old_keys = self._source_keys(kind, source)
        live = self.key(kind, source)
        pairs = [(_join(staging, suffix), _join(live, suffix)) for suffix in suffixes]
        sources_key = self.kind_key(kind) + ":sources"
        if not self.cluster:
            args = [sources_key, source, len(old_keys), *old_keys]
            return self.client.evalsha(_SWAP_SHA, 1, sources_key, *args, *(k for p in pairs for k in p))
        return self._swap_by_slot(sources_key, source, old_keys, pairs)

    def _swap_by_slot(self, sources_key: str, source: str, old_keys: list, pairs: list) -> int:
        """A Cluster's replace: every staging key checked first, then one swap per slot
        (atomic within the slot, one recipient's addressbook never half-replaced)."""
        from redis.crc import key_slot
        pipe = _pipeline(self.client)
        for staged, _ in pairs:
            pipe.exists(staged)
        lost = [staged for (staged, _), found in zip(pairs, pipe.execute()) if not found]
        if lost:
            raise redis.exceptions.ResponseError(f"replace aborted, list unchanged: staging key "
                                                 f"{lost[0]} is gone")
        slots: dict = {}
        for key in old_keys:
            slots.setdefault(key_slot(key.encode()), ([], []))[0].append(key)
        for staged, target in pairs:
            slots.setdefault(key_slot(target.encode()), ([], []))[1].extend((staged, target))
        pipe = _pipeline(self.client)
        for old, moves in slots.values():
            _evalsha(pipe, _SWAP_SHA, [(old or moves)[0]], "", source, len(old), *old, *moves)
        old_count = sum(pipe.execute())
        self.client.sadd(sources_key, source)
        return old_count

    def replace_source(self, kind: str, source: str, entries, batch: int = 1000) -> int:
        """Load a whole source under staging keys, then swap it in atomically."""
        return self.load(kind, source, entries, replace=True, batch=batch).loaded

    def remove(self, kind: str, source: str | None, entries) -> int:
        """Remove (suffix, field) entries from one source, or from all."""
        sources = [source] if source else sorted(self.sources(kind))
        pipe = _pipeline(self.client)
        for src in sources:
            for suffix, field in entries:
                pipe.hdel(self.key(kind, src, suffix), field)
        return sum(pipe.execute())

    def remove_keys(self, kind: str, source: str | None, suffixes) -> int:
        """Drop whole hashes (an addressbook of one recipient); returns entries dropped."""
        sources = [source] if source else sorted(self.sources(kind))
        keys = [self.key(kind, src, suffix) for src in sources for suffix in suffixes]
        if not keys:
            return 0
        # One transaction on a single Redis; on a Cluster the keys lie in many slots.
        pipe = self.client.pipeline(transaction=not self.cluster)
        for key in keys:
            pipe.hlen(key)
        for key in keys:
            pipe.unlink(key)
        return sum(pipe.execute()[:len(keys)])

    def remove_source(self, kind: str, source: str) -> tuple:
        """Drop a whole source of KIND, its hashes and its name in ``KIND:sources``, in one
        transaction. Returns (entries dropped, whether the source was listed)."""
        check_source(source)
        keys = self._source_keys(kind, source)
        if self.cluster:
            # A source's hashes live in many slots, and a Cluster has no transaction across
            # slots: the name goes first (lookups stop reading the source), then the hashes.
            listed = bool(self.client.srem(self.kind_key(kind) + ":sources", source))
            pipe = _pipeline(self.client)
            for key in keys:
                pipe.hlen(key)
            for key in keys:
                pipe.unlink(key)
            return sum(pipe.execute()[:len(keys)]), listed
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.hlen(key)
        if keys:
            pipe.unlink(*keys)
        pipe.srem(self.kind_key(kind) + ":sources", source)
        replies = pipe.execute()
        return sum(replies[:len(keys)]), bool(replies[-1])

    def sources(self, kind: str) -> set:
        return set(self.client.smembers(self.kind_key(kind) + ":sources"))

    def entries(self, kind: str, source: str | None = None, suffix: str | None = None):
        """Yield Hits for every entry of a kind (optionally one source, one key suffix)."""
        sources = [source] if source else sorted(self.sources(kind))
        for src in sources:
            prefix = self.key(kind, src)
            keys = [self.key(kind, src, suffix)] if suffix else self._source_keys(kind, src)
            for key in sorted(keys):
                key_suffix = key[len(prefix) + 1:] if kind == "ab" else ""
                if key_suffix and self.cluster:
                    key_suffix = key_suffix[1:-1]          # the {RECIPIENT} tag
                for field, value in sorted(self.client.hscan_iter(key, count=1000)):
                    yield Hit(kind, src, key_suffix, field, value)

    def stats(self, kind: str) -> dict:
        """source -> (number of hashes, number of entries)."""
        out = {}
        for src in sorted(self.sources(kind)):
            keys = self._source_keys(kind, src)
            pipe = _pipeline(self.client)
            for key in keys:
                pipe.hlen(key)
            lengths = [n for n in pipe.execute() if n] if keys else []
            out[src] = (len(lengths), sum(lengths))
        return out

    def _source_keys(self, kind: str, source: str) -> list:
        prefix = self.key(kind, source)
        if kind != "ab":
            return [prefix]
        return list(self.client.scan_iter(match=_glob_escape(prefix) + ":*", count=1000))

    def check_schema(self) -> int:
        """The schema version recorded in Redis, after recording ours if none was.

        ``<key_prefix>schema`` (the one key outside ``<key_prefix>vN:``) holds the
        newest schema any mx6milter wrote here; a higher number than ours means a
        newer version shares this Redis and keeps data we do not read. Raises
        StoreUnavailable."""
        try:
            self.client.set(self.marker, SCHEMA_VERSION, nx=True)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err
        return self.read_schema() or 0

    def read_schema(self) -> int | None:
        """The schema version recorded in Redis, None if none is (nothing written; for
        ``mx6ctl check``); 0 for a value that is no number. Raises StoreUnavailable."""
        try:
            found = self.client.get(self.marker)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err
        if found is None:
            return None
        try:
            return int(found)
        except (TypeError, ValueError):
            return 0

def address_query(address: ipaddress.IPv6Address) -> tuple:
    """The lookup pair for every prefix in a kind's sources that holds ADDRESS (one
    such pair a kind, with or without other pairs): the prefixes are computed in
    Redis, for the lengths in use only, and answered like the pairs ("", PREFIX)."""
    return (ADDRESS_QUERY, f"{int(address):032x}")


def _join(base: str, suffix: str) -> str:
    return f"{base}:{suffix}" if suffix else base


def _pack(texts: list) -> bytes:
    """Strings (str or bytes) as one Lua argument: each as b"LEN:BYTES"."""
    if all(type(text) is str for text in texts):
        packed = "".join(f"{len(text)}:{text}" for text in texts)
        if packed.isascii():          # the usual case: lengths in characters are in bytes
            return packed.encode("ascii")
    items = [text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
             for text in texts]
    return b"".join(b"%d:%s" % (len(item), item) for item in items)


def _pipeline(client):
    """A non-transactional pipeline; a Cluster's keeps the client's policy_resolver, which
    redis-py 8.1's RedisCluster.pipeline() does not pass on (see _script_routing)."""
    pipe = client.pipeline(transaction=False)
    if hasattr(client, "_policy_resolver") and hasattr(pipe, "_policy_resolver"):
        pipe._policy_resolver = client._policy_resolver
    return pipe


def _script_routing() -> dict:
    """RedisCluster options that route a pipelined EVALSHA by its first declared key without
    asking the server: redis-py 8 otherwise sends COMMAND GETKEYS first (a round trip per
    script) for commands it has no policy for. Empty for a redis-py without policies."""
    try:
        from redis.commands.policies import (
            BasePolicyResolver, CommandPolicies, RequestPolicy, ResponsePolicy, StaticPolicyResolver)
    except ImportError:
        return {}

    class ScriptPolicies(BasePolicyResolver):
        def __init__(self, fallback=None):
            keyed = CommandPolicies(request_policy=RequestPolicy.DEFAULT_KEYED,
                                    response_policy=ResponsePolicy.DEFAULT_KEYED)
            super().__init__({"core": {"evalsha": keyed}}, fallback or StaticPolicyResolver())

        def with_fallback(self, fallback):
            return ScriptPolicies(fallback)

    return {"policy_resolver": ScriptPolicies()}


def _evalsha(pipe, sha: str, keys: list, *args) -> None:
    """EVALSHA queued in a pipeline (redis-py's ClusterPipeline offers no evalsha method;
    the command itself is routed by its first key)."""
    pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)


def _wrong_type(reply: Exception) -> bool:
    return isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("WRONGTYPE")


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
