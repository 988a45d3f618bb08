"""Prometheus metrics: every name and label in one place, and the /metrics listener.

One ``Metrics`` per process, made by the daemon and passed in: the Evaluator's
milter counts decisions and findings, ``dns.Resolver`` its queries, ``store.Store``
its round trips. Names and labels are documented in mx6milter(8); keep both in step.

With ``[milter] processes > 1`` prometheus_client's multiprocess mode is used:
each worker writes its values to files in a directory made for this run
(``multiprocess_dir``), and the supervisor serves their sum. Counters of a
worker that died stay counted; its sessions-in-flight gauge goes with it.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.exposition import start_http_server

from . import __version__
from .config import ConfigError, parse_listen
from .model import Decision, Tier

# Seconds. A warm decision costs about 2 ms of CPU; DNS can make it seconds ([dns] budget).
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0)
# From a fallback to the same message arriving over IPv4: senders retry after minutes to days.
RECOVERY_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0,
                    86400.0, 2 * 86400.0, 4 * 86400.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_DIR_PREFIX = "mx6milter-metrics-"


class Metrics:
    """The counters, gauges and histograms of one process, in REGISTRY (a private one
    unless given: two Daemons in one test process must not share values)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = reg = registry if registry is not None else CollectorRegistry()
        self._children: dict = {}     # (metric, label values) -> its child; see _child
        self.decisions = Counter(
            "mx6milter_decisions", "Decisions on IPv6 messages, by tier (as in the verdict header) "
            "and action", ["tier", "action"], registry=reg)
        self.fallbacks = Counter(
            "mx6milter_fallbacks", "Messages at tier none (pushed back, or reported in report "
            "mode), by reason", ["reason"], registry=reg)
        self.findings = Counter(
            "mx6milter_findings", "Checks made for IPv6 messages, by finding kind and result",
            ["kind", "result"], registry=reg)
        self.decision_seconds = Histogram(
            "mx6milter_decision_seconds", "Time to gather the evidence and decide, per message",
            buckets=DECISION_BUCKETS, registry=reg)
        self.dns_queries = Counter(
            "mx6milter_dns_queries", "DNS queries sent to a server (the cache could not answer)",
            registry=reg)
        self.dns_cache_hits = Counter(
            "mx6milter_dns_cache_hits", "DNS lookups answered from the cache (answers, NXDOMAIN, "
            "remembered failures)", registry=reg)
        self.dns_failures = Counter(
            "mx6milter_dns_failures", "DNS lookups that failed temporarily (SERVFAIL, refused, "
            "unreachable, timed out; timeouts also count in mx6milter_dns_timeouts_total)",
            registry=reg)
        self.dns_timeouts = Counter(
            "mx6milter_dns_timeouts", "DNS lookups that timed out or found the budget spent",
            registry=reg)
        self.redis_errors = Counter(
            "mx6milter_redis_errors", "Redis commands that failed (connection, timeout, error "
            "reply)", registry=reg)
        self.redis_seconds = Histogram(
            "mx6milter_redis_roundtrip_seconds", "Time of one decision's Redis round trip",
            buckets=REDIS_BUCKETS, registry=reg)
        self.sessions = Gauge(
            "mx6milter_sessions_in_flight", "Milter connections open now",
            multiprocess_mode="livesum", registry=reg)
        self.ipv4_messages = Counter(
            "mx6milter_ipv4_messages", "Messages seen over IPv4 (passed untouched)", registry=reg)
        # Fallbacks followed to IPv4 (issue 18, item 2): the same message arriving over IPv4
        # after an IPv6 fallback. Counted with recovered(delay) by the code that finds it.
        self.fallbacks_recovered = Counter(
            "mx6milter_fallbacks_recovered", "IPv6 fallbacks whose message later arrived over "
            "IPv4", registry=reg)
        self.recovery_seconds = Histogram(
            "mx6milter_fallback_recovery_seconds", "Delay from an IPv6 fallback to the same "
            "message arriving over IPv4", buckets=RECOVERY_BUCKETS, registry=reg)
        self.build_info = Gauge(
            "mx6milter_build_info", "Always 1; the labels say which mx6milter and Python run",
            ["version", "python"], multiprocess_mode="max", registry=reg)
        self.build_info.labels(__version__, platform.python_version()).set(1)

    def decision(self, decision: Decision, checks, seconds: float) -> None:
        """Count one IPv6 decision: its tier and action, its fallback reasons, every check.

        Finding kinds and results come from the evidence modules, so a new source is
        counted without an edit here."""
        self._child(self.decisions, decision.tier.value, decision.action.value).inc()
        if decision.tier is Tier.NONE:
            for reason in decision.reasons:
                self._child(self.fallbacks, reason).inc()
        for finding in checks:
            self._child(self.findings, finding.kind, finding.result).inc()
        self.decision_seconds.observe(seconds)

    def _child(self, metric, *values: str):
        """METRIC.labels(*VALUES), remembered: labels() checks and locks on every call,
        a dict lookup does not (half the cost of counting a decision)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def recovered(self, delay_seconds: float) -> None:
        """A fallback's message came back over IPv4 after DELAY_SECONDS."""
        self.fallbacks_recovered.inc()
        self.recovery_seconds.observe(max(0.0, delay_seconds))


def serve(listen: str, registry: CollectorRegistry):
    """Start the /metrics listener on LISTEN (HOST:PORT) in a thread; returns the server."""
    host, port = parse_listen(listen)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise ConfigError(f"[metrics] listen = {listen}: cannot listen: {err.strerror or err}") \
            from None
    return server


def multiprocess_registry(path: str) -> CollectorRegistry:
    """What the supervisor serves: the sum of every worker's files in PATH."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def enable_multiprocess(uid: int | None, gid: int | None) -> str:
    """Make this run's directory for worker values and switch prometheus_client to it.

    A fresh directory per run ($RUNTIME_DIRECTORY under systemd, else the system's
    temporary directory), given to the user the workers run as; directories left by
    runs whose supervisor is gone are removed. Call before any worker makes a Metrics.
    """
    base = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or tempfile.gettempdir()
    remove_stale_dirs(base)
    path = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=base)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    os.environ[MULTIPROC_ENV] = path
    # prometheus_client picks its value class when imported, from this variable; we
    # import it before the configuration is read, so pick again (before any worker exists).
    values.ValueClass = values.get_value_class()
    return path


def remove_stale_dirs(base: str) -> None:
    """Directories of earlier runs (killed before they could clean up) in BASE."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(_DIR_PREFIX) + r"(\d+)-\w+", name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def worker_gone(path: str, pid: int) -> None:
    """A worker exited: its live gauges (sessions in flight) no longer count."""
    multiprocess.mark_process_dead(pid, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
