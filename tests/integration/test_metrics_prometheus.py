"""Metrics as an operator sees them: a real Prometheus scrapes the real daemon.

miltertest plays the MTA for whitelisted and unknown IPv6 clients and for IPv4
ones; the counters read back through Prometheus' HTTP API must equal the
decisions made (as the daemon's JSON log tells them, and as the clients were
chosen), with one process and with two workers (prometheus_client's
multiprocess mode). The Grafana dashboard's queries run against the same
Prometheus.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from milterd import MilterDaemon, mx6ctl
from miltertest_driver import miltertest
from prometheus import PrometheusServer
from servers import free_port

from mx6milter import __version__

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "mx6milter.json"
WHITELISTED, UNKNOWN, IPV4 = "2001:db8:6::10", "2001:db8:99::1", "192.0.2.10"
SENT = {WHITELISTED: 3, UNKNOWN: 2, IPV4: 2}


@pytest.fixture(params=[(1, "defensive"), (2, "report")], ids=["processes=1", "processes=2"])
def scraped(request, tmp_path, redis_url, dns_server):
    """The daemon with [metrics] listen, SENT sessions made, a Prometheus scraping it."""
    processes, mode = request.param
    listen = f"127.0.0.1:{free_port()}"
    extra = (f"[milter]\nprocesses = {processes}\n[policy]\nmode = {mode}\n"
             f"[metrics]\nlisten = {listen}\n[log]\nformat = json\n")
    with MilterDaemon(tmp_path / "milter", f"unix:{tmp_path}/m.sock", redis_url, extra,
                      nameservers=dns_server.nameservers) as milter:
        mx6ctl(milter.conf, "ip", "add", "2001:db8:6::/48")
        for client, times in SENT.items():
            for _ in range(times):
                miltertest("any_session.lua", milter.socket, CLIENT=client)
        with PrometheusServer(tmp_path / "prometheus", [listen]) as prom:
            yield prom, milter, mode


def logged_decisions(milter: MilterDaemon) -> list:
    """The decision records of the daemon's log; every line of it must be one JSON object."""
    records = [json.loads(line) for line in milter.log().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "decision"]


def test_counters_equal_the_decisions_made(scraped):
    prom, milter, mode = scraped
    refused = "tempfail" if mode == "defensive" else "accept"     # report mode accepts
    expected = {("whitelisted", "accept"): float(SENT[WHITELISTED]),
                ("none", refused): float(SENT[UNKNOWN])}
    decisions = prom.wait_samples("sum by (tier, action) (mx6milter_decisions_total)",
                                  ("tier", "action"), expected)
    assert decisions == expected
    records = logged_decisions(milter)
    assert Counter((r["verdict"], r["action"]) for r in records) == \
        {key: int(n) for key, n in expected.items()}
    # every fallback reason and every check the log shows, counted the same
    reasons = Counter(reason for r in records if r["verdict"] == "none" for reason in r["reasons"])
    assert prom.samples("sum by (reason) (mx6milter_fallbacks_total)", "reason") == \
        {(reason,): float(n) for reason, n in reasons.items()}
    checks = Counter(re.match(r"([^=]+)=([^(]+)", check).groups()
                     for r in records for check in r["checks"])
    assert prom.samples("sum by (kind, result) (mx6milter_findings_total)", "kind", "result") == \
        {key: float(n) for key, n in checks.items()}
    assert prom.samples("sum(mx6milter_ipv4_messages_total)") == {(): float(SENT[IPV4])}
    assert prom.samples("sum(mx6milter_decision_seconds_count)") == {(): float(len(records))}
    assert prom.samples("sum(mx6milter_sessions_in_flight)") == {(): 0.0}   # all closed
    assert prom.samples("sum(mx6milter_redis_roundtrip_seconds_count)") == \
        {(): float(len(records))}                                 # one round trip each
    assert prom.samples("sum(mx6milter_redis_errors_total)") == {(): 0.0}
    queried = prom.samples("sum(mx6milter_dns_queries_total)")[()]
    assert queried > 0                                            # SPF, DKIM, DMARC, PTR
    assert prom.samples("max by (version) (mx6milter_build_info)", "version") == \
        {(__version__,): 1.0}


def dashboard_queries() -> list:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def grafana_to_promql(expr: str) -> str:
    """The query as Grafana sends it: its variables filled in (every MX host)."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


@pytest.mark.parametrize("scraped", [(1, "defensive")], ids=["processes=1"], indirect=True)
def test_every_dashboard_query_runs_on_prometheus(scraped):
    prom, _milter, _mode = scraped
    prom.wait_samples("sum(mx6milter_decisions_total)", (), {(): 5.0})
    # rate() answers once two scrapes are in the window (a steady counter's rate is 0)
    assert prom.wait_samples("count(rate(mx6milter_decisions_total[1m])) > bool 0", (),
                             {(): 1.0}) == {(): 1.0}
    queries = dashboard_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        data = prom.query(grafana_to_promql(expr))     # status success, else AssertionError
        assert data["resultType"] in ("vector", "matrix"), (title, expr, data)
        assert data["result"], (title, expr, "no series")
        ranged = prom.api("query_range", query=grafana_to_promql(expr),
                          start=f"{_now() - 60:.0f}", end=f"{_now():.0f}", step="5")
        assert ranged["resultType"] == "matrix", (title, expr)


def _now() -> float:
    import time
    return time.time()
