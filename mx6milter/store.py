"""Redis: the key schema, the one-round-trip lookup, and the writes mx6ctl makes.

Schema version 1, every key under ``<key_prefix>v1:`` but the marker
``<key_prefix>schema`` (``Store.check_schema``)::

    <p>KIND:sources            set of source names that hold entries of KIND
    <p>KIND:SOURCE             hash FIELD -> VALUE          (ip, domain)
    <p>ab:SOURCE:RECIPIENT     hash SENDER -> VALUE         (addressbook)
    <p>history:ipv4:DOMAIN     hash "v" -> "COUNT FIRST_DAY LAST_DAY EXPIRES", with a TTL
    <p>rdap:domain:DOMAIN      string "IANA_ID REGISTERED REGISTRANT EXPIRES", with a TTL
    <p>rdap:ip:HEXPREFIX/LEN   string "ABUSE EXPIRES", with a TTL (evidence/rdap.py: an
                               RDAP answer, fetched in the background, cached for all)
    <p>registrar:SOURCE        hash IANA_ID -> EXPIRY (the stringent registrars)
    <p>ab:learned:USER         hash CORRESPONDENT -> EXPIRY, with a TTL (learnt from
                               outbound mail, at most a cap of fields, the oldest evicted)

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
runs server-side in a Lua script (one EVALSHA per kind, all of them in one
pipeline), so a decision costs one round trip however many sources exist.
A key of the wrong type is skipped by the lookup and reported, never fatal.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .entries import check_source, value_expiry

log = logging.getLogger("mx6milter")

SCHEMA_VERSION = 1
KINDS = ("ip", "domain", "ab", "green", "asn", "asnlist", "mishandle4xx", "history", "registrar")
STAGING_TTL = 86400     # staging keys of an interrupted replace vanish by themselves

# The (key suffix, field) pairs travel packed in ARGV[2] as "LEN:BYTES" items
# (see _pack): redis-py's per-argument packing of ~260 arguments per kind
# was half the CPU time of a decision. unpack_pairs() unpacks them, and only
# for a kind that has sources at all.
_UNPACK_LUA = """
local function unpack_pairs()
  local Q, packed, pos = {}, ARGV[2] or '', 1
  while pos <= #packed do
    local colon = string.find(packed, ':', pos, true)
    local n = tonumber(string.sub(packed, pos, colon - 1))
    Q[#Q + 1] = string.sub(packed, colon + 1, colon + n)
    pos = colon + n + 1
  end
  return Q
end
"""

# A key of the wrong type (a source named "sources" let in by an older version,
# a key written by hand) must not fail the whole lookup, and with it all IPv6
# mail: redis.pcall turns its WRONGTYPE into a value; the source is skipped and
# its key returned in BAD, which the Store logs once.
_SAFE_LUA = """
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
"""

# ARGV[1] = "<p>KIND", ARGV[2] = packed (key suffix, field) pairs; returns
# {flat (source, suffix, field, value) quadruples for every hit in every source, BAD}.
_LOOKUP_LUA = _UNPACK_LUA + _SAFE_LUA + """
local base = ARGV[1]
local sources = members(base .. ':sources')
local out = {}
if #sources == 0 then return {out, BAD} end
local Q = unpack_pairs()
for _, src in ipairs(sources) do
  for i = 1, #Q, 2 do
    local key = base .. ':' .. src
    if Q[i] ~= '' then key = key .. ':' .. Q[i] end
    local v, bad = hget(key, Q[i + 1])
    if bad and Q[i] == '' then break end
    if v then
      out[#out + 1] = src; out[#out + 1] = Q[i]
      out[#out + 1] = Q[i + 1]; out[#out + 1] = v
    end
  end
end
return {out, BAD}
"""
_LOOKUP_SHA = hashlib.sha1(_LOOKUP_LUA.encode()).hexdigest()

# The lookup of kind "asn", chained so it stays in the same round trip: the
# prefix-to-ASN hits as above, then for each origin ASN in them the ASN
# greenlist's hits ("<p>asnlist:SOURCE" FIELD ASN) with key suffix "list".
_ASN_LUA = _UNPACK_LUA + _SAFE_LUA + """
local base = ARGV[1]
local lists = members(base .. 'list:sources')
local out, seen, badlist = {}, {}, {}
local sources = members(base .. ':sources')
if #sources == 0 then return {out, BAD} end
local Q = unpack_pairs()
for _, src in ipairs(sources) do
  for i = 1, #Q, 2 do
    local v, bad = hget(base .. ':' .. src, Q[i + 1])
    if bad then break end
    if v then
      out[#out + 1] = src; out[#out + 1] = ''; out[#out + 1] = Q[i + 1]; out[#out + 1] = v
      for asn in string.gmatch(string.match(v, '^%S+') or '', '%d+') do
        if not seen[asn] then
          seen[asn] = true
          for _, list in ipairs(lists) do
            if not badlist[list] then
              local w, wbad = hget(base .. 'list:' .. list, asn)
              if wbad then badlist[list] = true end
              if w then
                out[#out + 1] = list; out[#out + 1] = 'list'; out[#out + 1] = asn; out[#out + 1] = w
              end
            end
          end
        end
      end
    end
  end
end
return {out, BAD}
"""
_ASN_SHA = hashlib.sha1(_ASN_LUA.encode()).hexdigest()

# Bulk writes, one batch per call. ARGV = live base ("<p>KIND:SOURCE"), staging
# base ("" = write to the live keys), staging TTL, then (suffix, field, value)
# triples. Returns {added, present, repeated}: new to the live list, already
# in it, or seen earlier in this same load (staging only).
_LOAD_LUA = """
local live, staging, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local added, present, repeated = 0, 0, 0
for i = 4, #ARGV, 3 do
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
  redis.call('HSET', target, field, ARGV[i + 2])
  if fresh then redis.call('EXPIRE', target, ttl) end
end
return {added, present, repeated}
"""

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
redis.call('SADD', ARGV[1], ARGV[2])
return old
"""


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


# The RDAP cache (kind "rdap"), chained like _ASN_LUA so it stays in the decision's
# round trip. ARGV[1] = "<p>", ARGV[2] = packed pairs: (DOMAIN, "domain") reads
# <p>rdap:domain:DOMAIN and, for the IANA Registrar ID its value starts with,
# every registrar list (key suffix "registrar"); ("", FIELD) reads <p>rdap:ip:FIELD.
_RDAP_LUA = _UNPACK_LUA + _SAFE_LUA + """
local base = ARGV[1]
local out = {}
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then BAD[#BAD + 1] = key; return nil end
  return v
end
local Q = unpack_pairs()
for i = 1, #Q, 2 do
  if Q[i + 1] == 'domain' then
    local v = get(base .. 'rdap:domain:' .. Q[i])
    if v then
      out[#out + 1] = 'domain'; out[#out + 1] = Q[i]; out[#out + 1] = 'v'; out[#out + 1] = v
      local id = string.match(v, '^(%d+) ')
      if id then
        for _, src in ipairs(members(base .. 'registrar:sources')) do
          local w = hget(base .. 'registrar:' .. src, id)
          if w then
            out[#out + 1] = src; out[#out + 1] = 'registrar'; out[#out + 1] = id; out[#out + 1] = w
          end
        end
      end
    end
  else
    local v = get(base .. 'rdap:ip:' .. Q[i + 1])
    if v then
      out[#out + 1] = 'ip'; out[#out + 1] = ''; out[#out + 1] = Q[i + 1]; out[#out + 1] = v
    end
  end
end
return {out, BAD}
"""
_RDAP_SHA = hashlib.sha1(_RDAP_LUA.encode()).hexdigest()

# The learnt addressbook of one user. KEYS[1] the hash, KEYS[2] the kind's sources
# set; ARGV: expiry (the value), TTL, cap, source, then the correspondents. Past
# the cap the fields with the smallest expiry (written to least recently) go.
# Returns how many were evicted.
_LEARN_LUA = """
for i = 5, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
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
                 addressbook_secret: bytes | None = None, clock=time.time):
        self.client = client
        self.base = f"{key_prefix}v{SCHEMA_VERSION}:"
        self.addressbook_secret = addressbook_secret
        self.clock = clock
        self._down_until = 0.0
        self._bad_keys_reported: set = set()   # keys of the wrong type, logged once each
        self._load_script = client.register_script(_LOAD_LUA)
        self._swap_script = client.register_script(_SWAP_LUA)
        self._history_script = client.register_script(_HISTORY_LUA)

    @classmethod
    def from_config(cls, redis_section, addressbook_secret: bytes | None = None,
                    command_timeout: float | None = None, password: str | None = None) -> "Store":
        """``command_timeout`` overrides [redis] timeout for replies (mx6ctl's bulk writes);
        ``password`` is [redis] password_file's (config.py refuses one in the URL too)."""
        client = redis.Redis.from_url(
            redis_section.url,
            password=password,
            socket_timeout=command_timeout or redis_section.timeout,
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
            try:
                replies = self._run_lookup(kinds, queries)
            except redis.exceptions.NoScriptError:
                for script in (_LOOKUP_LUA, _ASN_LUA, _RDAP_LUA):   # Redis restarted: once, again
                    self.client.script_load(script)
                replies = self._run_lookup(kinds, queries)
        except redis.exceptions.RedisError as err:
            self._mark_down()
            raise StoreUnavailable(str(err)) from err
        answers = {kind: [] for kind in queries}
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
        pipe = self.client.pipeline(transaction=False)
        for kind in kinds:
            if kind == "rdap":
                pipe.evalsha(_RDAP_SHA, 0, self.base, _pack(queries[kind]))
                continue
            pipe.evalsha(_ASN_SHA if kind == "asn" else _LOOKUP_SHA, 0, self.kind_key(kind),
                         _pack(queries[kind]))
        return pipe.execute(raise_on_error=True) if kinds else []

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
                keys=[self._hash_key(kind, source, domain), self.kind_key(kind) + ":sources"],
                args=[day, expires, ttl, source]))
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err

    def learn_addressbooks(self, source: str, books: dict, expires: int, ttl: int,
                           cap: int) -> int:
        """Add correspondents to users' addressbooks in SOURCE, one pipeline for all:
        BOOKS maps a user id to its correspondent ids (as ``addressbook_id`` gives
        them). Each value is EXPIRES, each hash lives TTL seconds from now and holds
        at most CAP fields. Returns how many were evicted. Raises StoreUnavailable."""
        def run() -> list:
            pipe = self.client.pipeline(transaction=False)
            for user, correspondents in books.items():
                pipe.evalsha(_LEARN_SHA, 2, self._hash_key("ab", source, user),
                             self.kind_key("ab") + ":sources", expires, ttl, cap, source,
                             *correspondents)
            return pipe.execute(raise_on_error=True)
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
            self.client.set(f"{self.base}rdap:{kind}:{name}", value, ex=ttl)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err

    def read_value(self, kind: str, source: str, suffix: str, field: str) -> str | None:
        """One entry's value, or None. Raises StoreUnavailable."""
        try:
            return self.client.hget(self._hash_key(kind, source, suffix), field)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err

    def used_memory(self) -> int | None:
        """Redis' used_memory in bytes, for mx6ctl stats."""
        return self.client.info("memory").get("used_memory")

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
        staging = f"{self._hash_key(kind, source)}~{secrets.token_hex(6)}" if replace else ""
        suffixes = set()
        result = LoadResult()
        if not replace:
            self.client.sadd(self.kind_key(kind) + ":sources", source)
        try:
            self._load_batches(kind, source, staging, entries, suffixes, result, batch, window)
            if replace:
                if not suffixes and not allow_empty:
                    raise EmptyReplace(f"no entries: refusing to empty {kind} source {source!r}")
                old = self._swap(kind, source, staging, suffixes)
                result.removed = max(0, old - result.present)
        except BaseException:
            if staging and suffixes:   # best effort; STAGING_TTL cleans up otherwise
                try:
                    self.client.unlink(*(_join(staging, s) for s in suffixes))
                except redis.exceptions.RedisError:
                    pass
            raise
        return result

    def _load_batches(self, kind, source, staging, entries, suffixes, result, batch, window):
        live = self._hash_key(kind, source)
        pipe = self.client.pipeline(transaction=False)
        args, queued = [], 0
        for suffix, field, value in entries:
            if staging:
                suffixes.add(suffix)
            args += (suffix, field, value)
            if len(args) >= 3 * batch:
                self._load_script(args=[live, staging, STAGING_TTL] + args, client=pipe)
                args, queued = [], queued + 1
                if queued >= window:
                    self._count(pipe.execute(), result)
                    queued = 0
        if args:
            self._load_script(args=[live, staging, STAGING_TTL] + args, client=pipe)
        self._count(pipe.execute(), result)

    @staticmethod
    def _count(replies, result: LoadResult) -> None:
        for added, present, repeated in replies:
            result.added += added
            result.present += present
            result.repeated += repeated

    def _swap(self, kind: str, source: str, staging: str, suffixes: set) -> int:
        old_keys = self._source_keys(kind, source)
        args = [self.kind_key(kind) + ":sources", source, len(old_keys), *old_keys]
        for suffix in suffixes:
            args += [_join(staging, suffix), self._hash_key(kind, source, suffix)]
        return self._swap_script(args=args)

    def replace_source(self, kind: str, source: str, entries, batch: int = 1000) -> int:
        """Load a whole source under staging keys, then swap it in atomically."""
        return self.load(kind, source, entries, replace=True, batch=batch).loaded

    def remove(self, kind: str, source: str | None, entries) -> int:
        """Remove (suffix, field) entries from one source, or from all."""
        sources = [source] if source else sorted(self.sources(kind))
        pipe = self.client.pipeline(transaction=False)
        for src in sources:
            for suffix, field in entries:
                pipe.hdel(self._hash_key(kind, src, suffix), field)
        return sum(pipe.execute())

    def remove_keys(self, kind: str, source: str | None, suffixes) -> int:
        """Drop whole hashes (an addressbook of one recipient); returns entries dropped."""
        sources = [source] if source else sorted(self.sources(kind))
        keys = [self._hash_key(kind, src, suffix) for src in sources for suffix in suffixes]
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.hlen(key)
        pipe.unlink(*keys)
        return sum(pipe.execute()[:-1])

    def sources(self, kind: str) -> set:
        return set(self.client.smembers(self.kind_key(kind) + ":sources"))

    def entries(self, kind: str, source: str | None = None, suffix: str | None = None):
        """Yield Hits for every entry of a kind (optionally one source, one key suffix)."""
        sources = [source] if source else sorted(self.sources(kind))
        for src in sources:
            prefix = self._hash_key(kind, src)
            keys = [self._hash_key(kind, src, suffix)] if suffix else self._source_keys(kind, src)
            for key in sorted(keys):
                key_suffix = key[len(prefix) + 1:] if kind == "ab" else ""
                for field, value in sorted(self.client.hscan_iter(key, count=1000)):
                    yield Hit(kind, src, key_suffix, field, value)

    def stats(self, kind: str) -> dict:
        """source -> (number of hashes, number of entries)."""
        out = {}
        for src in sorted(self.sources(kind)):
            keys = self._source_keys(kind, src)
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hlen(key)
            lengths = [n for n in pipe.execute() if n] if keys else []
            out[src] = (len(lengths), sum(lengths))
        return out

    def _source_keys(self, kind: str, source: str) -> list:
        prefix = self._hash_key(kind, source)
        if kind != "ab":
            return [prefix]
        return list(self.client.scan_iter(match=_glob_escape(prefix) + ":*", count=1000))

    def check_schema(self) -> int:
        """The schema version recorded in Redis, after recording ours if none was.

        ``<key_prefix>schema`` (the one key outside ``<key_prefix>vN:``) holds the
        newest schema any mx6milter wrote here; a higher number than ours means a
        newer version shares this Redis and keeps data we do not read. Raises
        StoreUnavailable."""
        key = self.base[:-len(f"v{SCHEMA_VERSION}:")] + "schema"
        try:
            self.client.set(key, SCHEMA_VERSION, nx=True)
            found = self.client.get(key)
        except redis.exceptions.RedisError as err:
            raise StoreUnavailable(str(err)) from err
        try:
            return int(found)
        except (TypeError, ValueError):
            return 0


def _join(base: str, suffix: str) -> str:
    return f"{base}:{suffix}" if suffix else base


def _pack(pairs) -> bytes:
    """(suffix, field) pairs as one Lua argument: each string as b"LEN:BYTES"."""
    packed = "".join(f"{len(s)}:{s}{len(f)}:{f}" for s, f in pairs)
    if packed.isascii():          # the usual case: lengths in characters are in bytes
        return packed.encode("ascii")
    items = [text.encode("utf-8", "surrogateescape") for pair in pairs for text in pair]
    return b"".join(b"%d:%s" % (len(item), item) for item in items)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
