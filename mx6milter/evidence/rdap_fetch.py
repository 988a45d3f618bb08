"""RDAP lookups in the background, cached in Redis for every MX host to share.

A decision never waits for RDAP (hundreds of milliseconds to seconds, and
registries rate-limit): when the cache has nothing for a message's domain or
network, ``want`` queues a lookup and the message gets no signal from RDAP;
its retry finds the cache warm. One worker thread (background.py) works the
bounded queue: at most one request per ``min_interval`` to each server, a 429
answer backs off that server for its Retry-After (60 s without one), every
request is bounded in time (``timeout``: connecting, each read, the whole) and size
(``max_response_size``). A failure caches nothing: the next message that
needs the name queues it again, once its server's back-off is over.

The server comes from the IANA bootstrap files (RFC 9224): the copies shipped
in ``mx6milter/data/rdap/`` or ``[rdap] bootstrap`` / ``ip_bootstrap``; a
bootstrap that names a plain-http server is followed (tests do).
"""
from __future__ import annotations

import email.utils
import ipaddress
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ..config import ConfigError
from .background import BackgroundQueue
from ..model import Finding
from ..prefixes import ip_candidates
from .rdap import (Bootstrap, RdapError, judge_rdap, judge_registrar, load_json, network_field,
                   network_value, notfound_value, parse_domain, parse_network, related_url)

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "rdap"
DEFAULT_BACKOFF = 60.0        # a 429 without Retry-After, or a server that failed
MAX_BACKOFF = 86400.0
MAX_FAILED = 10_000           # names remembered as failed (a back-off each)
USER_AGENT = "mx6milter (RDAP; +https://www.rfc-editor.org/rfc/rfc9083)"


class HttpFailure(Exception):
    def __init__(self, reason: str, status: int = 0, retry_after: float | None = None):
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


def load_bootstrap(path: str, shipped: str, kind: str) -> Bootstrap:
    where = Path(path) if path else SHIPPED / shipped
    key = "[rdap] " + ("ip_bootstrap" if kind == "ip" else "bootstrap")
    try:
        return Bootstrap.parse(where.read_bytes(), kind)
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {where}: {err.strerror or err}") from None
    except RdapError as err:
        raise ConfigError(f"{key}: {where} is not an IANA RDAP bootstrap file: {err}") from None


def load_bootstraps(section) -> tuple:
    """[rdap]'s (domain, IPv6) bootstrap registries; ConfigError naming a bad file."""
    return (load_bootstrap(section.bootstrap, "dns.json", "domain"),
            load_bootstrap(section.ip_bootstrap, "ipv6.json", "ip"))


def retry_after(text: str | None, now: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), clamped."""
    if not text:
        return DEFAULT_BACKOFF
    text = text.strip()[:64]
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_BACKOFF
    return min(max(seconds, 1.0), MAX_BACKOFF)


class RdapFetcher(BackgroundQueue):
    what = "RDAP"
    redis_warning = "{what}: Redis: {error} ({failed} lookups not cached so far)"

    def __init__(self, store, section, domains: Bootstrap, networks: Bootstrap,
                 clock=time.time, idle_seconds: float = 10.0):
        super().__init__(section.queue_size, idle_seconds=idle_seconds)
        self.store = store
        self.section = section
        self.domains = domains
        self.networks = networks
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: set = set()        # (kind, key) queued or being looked up
        self._failed: dict = {}           # (kind, key) -> not before (monotonic)
        self._next: dict = {}             # server -> earliest next request (monotonic)
        self._backoff: dict = {}          # server -> backed off until (monotonic)
        self.fetched = 0                  # answers cached
        self.deferred = 0                 # lookups skipped: their server is backed off

    @classmethod
    def from_config(cls, config, store) -> RdapFetcher:
        return cls(store, config.rdap, *load_bootstraps(config.rdap))

    # --- the message path: never blocks ---------------------------------------------------

    def want(self, kind: str, name) -> bool:
        """Queue a lookup of a domain ("domain") or an IPv6Address ("ip") unless it is
        queued already or failed recently. Never blocks, never raises."""
        key = (kind, str(ipaddress.IPv6Network((int(name) >> 80 << 80, 48)))
               if kind == "ip" else name)
        with self._lock:
            if key in self._pending or self._failed.get(key, 0) > time.monotonic():
                return False
            self._pending.add(key)
        if not self.submit((kind, name, key)):
            with self._lock:
                self._pending.discard(key)
            return False
        return True

    # --- the worker --------------------------------------------------------------------------

    def handle(self, items: list) -> None:
        for kind, name, key in items:
            try:
                self._lookup(kind, name, key)     # StoreUnavailable: the queue's pause
            finally:
                with self._lock:
                    self._pending.discard(key)

    def discard(self, items: list) -> None:
        """Lookups skipped while Redis is paused: a later message may queue them again."""
        with self._lock:
            self._pending.difference_update(key for _, _, key in items)

    def _lookup(self, kind: str, name, key) -> None:
        bootstrap = self.networks if kind == "ip" else self.domains
        url = bootstrap.url(name)
        try:
            if not url:
                self._cache(kind, name, None, self.section.negative_ttl)
                return
            data = self._get_json(url)
            if data is None:
                self._cache(kind, name, None, self.section.negative_ttl)
                return
            record = parse_network(data) if kind == "ip" else self._domain_record(data)
            self._cache(kind, name, record, self.section.cache_ttl)
        except (HttpFailure, RdapError) as err:
            self._fail(key, url, err)

    def _domain_record(self, data: dict):
        record = parse_domain(data)
        related = related_url(data) if record.registrant == "absent" else ""
        if related:           # a thin registry: the registrar's server has the registrant
            try:
                extra = self._get_json(related)
            except (HttpFailure, RdapError) as err:
                log.info("RDAP: registrar's record %s: %s", related, err)
                extra = None
            if extra is not None:
                try:
                    registrant = parse_domain(extra).registrant
                except RdapError:
                    registrant = "absent"
                record = type(record)(record.registrar_id, record.registered, registrant)
        return record

    def _cache(self, kind: str, name, record, ttl: int) -> None:
        expires = int(self.clock()) + ttl
        if kind == "ip":
            field = network_field(record, name)
            self.store.cache_rdap("ip", field, network_value(record, name, expires), ttl)
        else:
            value = record.value(expires) if record is not None else notfound_value(expires)
            self.store.cache_rdap("domain", name, value, ttl)
        self.fetched += 1

    def _fail(self, key, url: str, err: Exception) -> None:
        server = urlsplit(url).netloc
        wait = DEFAULT_BACKOFF
        if isinstance(err, HttpFailure) and err.status == 429:
            wait = err.retry_after or DEFAULT_BACKOFF
            self._backoff[server] = time.monotonic() + wait
        wait = max(wait, self._backoff.get(server, 0) - time.monotonic())
        self.failed += 1
        with self._lock:
            if len(self._failed) >= MAX_FAILED:
                now = time.monotonic()
                self._failed = {k: t for k, t in self._failed.items() if t > now}
                if len(self._failed) >= MAX_FAILED:
                    self._failed.clear()
            self._failed[key] = time.monotonic() + wait
        log.info("RDAP: %s: %s (not cached; again after %.0f s)", url, err, wait)

    # --- HTTP ---------------------------------------------------------------------------------

    def _get_json(self, url: str) -> dict | None:
        """The answer's JSON object; None for 404 (no such object). Raises HttpFailure."""
        server = urlsplit(url).netloc
        now = time.monotonic()
        if self._backoff.get(server, 0) > now:
            self.deferred += 1
            raise HttpFailure(f"server backed off for {self._backoff[server] - now:.0f} s more")
        wait = self._next.get(server, 0) - now
        if wait > 0:
            time.sleep(wait)          # the worker thread only: the rate limit per server
        self._next[server] = time.monotonic() + self.section.min_interval
        status, body = self.http_get(url)
        if status == 404:
            return None
        return load_json(body)

    def http_get(self, url: str) -> tuple:
        """(status, body) of a 200 or 404; raises HttpFailure for anything else."""
        deadline = time.monotonic() + self.section.timeout
        request = urllib.request.Request(url, headers={"Accept": "application/rdap+json",
                                                       "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.section.timeout) as response:
                return response.status, self._read(response, deadline)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return 404, b""
            after = retry_after(err.headers.get("Retry-After"), self.clock()) \
                if err.code == 429 else None
            raise HttpFailure(f"HTTP {err.code}", err.code, after) from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise HttpFailure(f"{type(err).__name__}: {str(err)[:120]}") from None

    def _read(self, response, deadline: float) -> bytes:
        cap = self.section.max_response_size
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise HttpFailure(f"no complete answer within {self.section.timeout} s")
            chunk = response.read1(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > cap:
                raise HttpFailure(f"answer larger than {cap} bytes")
            chunks.append(chunk)


class RdapSignals:
    """The greenlist's registrar and rdap signals: the cache's queries for the decision's
    one Redis round trip, the Findings from its answers, and a lookup queued on a miss."""

    def __init__(self, section, fetcher: RdapFetcher, org_domain, clock=time.time):
        self.section = section          # [greenlist]
        self.fetcher = fetcher
        self.org_domain = org_domain    # registered domain of a name (Public Suffix List)
        self.clock = clock

    def domain(self, auth) -> str:
        """The registered domain of the aligned From domain; "" if none authenticated."""
        if not auth.aligned_via or not auth.dmarc.from_domain:
            return ""
        return self.org_domain(auth.dmarc.from_domain)

    def queries(self, domain: str, address: ipaddress.IPv6Address) -> list:
        if not domain:
            return []
        pairs = [(domain, "domain")]
        if self.section.rdap:
            pairs += [("", f) for f in ip_candidates(address)]
        return pairs

    def conclude(self, hits: list | None, domain: str, address: ipaddress.IPv6Address) -> list:
        names = [n for n in ("registrar", "rdap") if getattr(self.section, n)]
        if not domain:
            return [Finding(n, "skipped", "From domain not authenticated") for n in names]
        if hits is None:
            return []
        found = []
        if self.section.registrar:
            found.append(judge_registrar(hits, domain))
        if self.section.rdap:
            found.append(judge_rdap(hits, domain, self.section.rdap_min_age, self.clock()))
        if not any(h.source == "domain" and h.key == domain for h in hits):
            self.fetcher.want("domain", domain)
        if self.section.rdap and not any(h.source == "ip" and h.key == "" for h in hits):
            self.fetcher.want("ip", address)
        return found
