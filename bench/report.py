"""The table: every figure of a run, and each goal as a ratio from the same run."""
from __future__ import annotations

import math

from . import mta


def _table(header: list, rows: list) -> str:
    """An RST simple table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths)).rstrip(), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells[1:]]
    lines.append(rule)
    return "\n".join(lines)


def _f(value, digits=1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:,.{digits}f}"


def mta_section(samples: list, levels: list, rounds: int) -> str:
    rows = []
    configs = [c for c in mta.CONFIGS if any(s.config == c for s in samples)]
    for config in configs:
        row = [mta.LABELS[config]]
        row += [_f(mta.median_rate(samples, config, n)) for n in levels]
        for base in ("none", "null-unix"):
            row.append(" / ".join(_f(mta.paired_ratio(samples, config, base, n), 2)
                                  for n in levels))
        rows.append(row)
    head = ["configuration"] + [f"msg/s @{n}" for n in levels] + \
        [f"x no milter ({'/'.join(map(str, levels))})",
         f"x do-nothing ({'/'.join(map(str, levels))})"]
    return (f"MTA level: messages/s through Postfix (median of {rounds} interleaved rounds; "
            f"ratios are medians of same-round ratios)\n\n" + _table(head, rows))


def milter_section(rows: list, null_rows: list) -> str:
    table = [[r.cache, r.sessions, r.messages, _f(r.rate), _f(r.p50, 2), _f(r.p99, 2),
              _f(r.max, 2), r.errors] for r in rows]
    table += [[f"do-nothing ({r.cache})", r.sessions, r.messages, _f(r.rate), _f(r.p50, 2),
               _f(r.p99, 2), _f(r.max, 2), r.errors] for r in null_rows]
    return ("Milter level: the decision alone, milter protocol on a unix socket "
            "(latency: end of message to verdict, judged IPv6 messages)\n\n" +
            _table(["DNS cache", "sessions", "messages", "msg/s", "p50 ms", "p99 ms", "max ms",
                    "errors"], table))


def costs_section(costs: dict) -> str:
    rows = []
    for kind, c in costs.items():
        commands = ", ".join(f"{name} {n:g}" for name, n in sorted(c["redis_commands"].items()))
        rows.append([kind, _f(c["redis_round_trips"], 2), commands or "none",
                     c["dns_first"], _f(c["dns_repeat"], 2)])
    return ("Cost of one decision (counted: a Redis proxy counting round trips, INFO "
            "commandstats, the DNS server's query log)\n\n" +
            _table(["kind", "Redis round trips", "Redis commands", "DNS queries, first",
                    "DNS queries, repeat"], rows))


def decision_section(decision: dict) -> str:
    rows = [[kind, d["tier"], _f(d["warm_cpu_ms"], 3), _f(d["redis_server_cpu_ms"], 3),
             str(d["redis_commands"])] for kind, d in decision.items()]
    return ("Warm decision in process (bench/bench_decision.py: the daemon's evaluator with "
            "DNSWL, ARC, the baseline and history signals and learning on; medians of seven "
            "interleaved rounds)\n\n" +
            _table(["kind", "tier", "CPU ms", "Redis server CPU ms", "Redis commands"], rows))


def memory_section(points: list, redis: dict | None) -> str:
    parts = []
    if points:
        rows = [[f"{n:,}", f"{rss:,}"] for n, rss in points]
        parts.append("Daemon RSS under the warm mix (16 sessions)\n\n" +
                     _table(["messages", "RSS kB"], rows))
    if redis:
        parts.append(
            f"Redis used_memory: {redis['ip_entries']:,} whitelisted prefixes "
            f"{redis['ip_bytes'] / 2**20:,.1f} MiB; {redis['pairs']:,} addressbook pairs "
            f"({redis['recipients']:,} recipients) {redis['ab_bytes'] / 2**20:,.1f} MiB; "
            f"total used_memory {redis['used_memory'] / 2**20:,.1f} MiB, "
            f"RSS {redis['rss'] / 2**20:,.1f} MiB")
    return "\n\n".join(parts)


def rss_growth(points: list, start_at: int) -> float:
    """Growth from the first sample at or after START_AT to the last sample."""
    later = [p for p in points if p[0] >= start_at]
    if len(later) < 2:
        return float("nan")
    return later[-1][1] / later[0][1] - 1


def goals(results: dict) -> list:
    """(goal, measured, met) rows; met is True, False or None (not measured)."""
    rows = []
    decision = results.get("decision")
    if decision:
        cpu = max(d["warm_cpu_ms"] for d in decision.values())
        commands = max(d["redis_commands"] for d in decision.values())
        rows.append(("warm decision CPU <= 0.6 ms, in process (max over kinds)",
                     f"{_f(cpu, 3)} ms", cpu <= 0.6))
        rows.append(("Redis commands per decision <= 12, in process (max over kinds)",
                     str(commands), commands <= 12))
    samples = results.get("mta_samples")
    if samples:
        r_null = mta.paired_ratio(samples, "mx6-unix", "null-unix", 16)
        r_dkim = mta.paired_ratio(samples, "mx6-unix", "opendkim+opendmarc", 16)
        r_tcp = mta.paired_ratio(samples, "mx6-tcp", "mx6-tcp-nagle", 16)
        rows.append(("mx6milter unix >= 0.8x do-nothing pymilter @16", f"{_f(r_null, 2)}x",
                     _met(r_null, 0.8)))
        rows.append(("mx6milter unix > OpenDKIM+OpenDMARC @16", f"{_f(r_dkim, 2)}x",
                     _met(r_dkim, 1.0, strict=True)))
        for config, label in (("mx6-unix-2p", "mx6milter unix, 2 processes"),):
            r_null2 = mta.paired_ratio(samples, config, "null-unix", 16)
            r_dkim2 = mta.paired_ratio(samples, config, "opendkim+opendmarc", 16)
            if not math.isnan(r_null2):
                rows.append((f"{label} >= 0.8x do-nothing pymilter @16", f"{_f(r_null2, 2)}x",
                             _met(r_null2, 0.8)))
                rows.append((f"{label} > OpenDKIM+OpenDMARC @16", f"{_f(r_dkim2, 2)}x",
                             _met(r_dkim2, 1.0, strict=True)))
        rows.append(("TCP_NODELAY >= 1.8x without it @16 (mx6milter)", f"{_f(r_tcp, 2)}x",
                     _met(r_tcp, 1.8)))
        r_null_tcp = mta.paired_ratio(samples, "null-tcp", "null-tcp-nagle", 16)
        rows.append(("TCP_NODELAY >= 1.8x without it @16 (do-nothing)", f"{_f(r_null_tcp, 2)}x",
                     _met(r_null_tcp, 1.8)))
    for row in results.get("milter_rows", []):
        if row.cache.startswith("warm") and row.sessions == 16 and "processes" not in row.cache:
            load = "saturated" if row.cache == "warm" else row.cache.split(", ", 1)[1]
            rows.append((f"p99 decision latency, warm, @16 ({load}) < 5 ms",
                         f"{_f(row.p99, 2)} ms", None if math.isnan(row.p99) else row.p99 < 5))
    ab = results.get("metrics_ab")
    if ab:
        rows.append(("[metrics] on >= 0.95x off, warm @16 (milter level, A/B)",
                     f"{_f(ab['ratio'], 3)}x", _met(ab["ratio"], 0.95)))
    costs = results.get("costs")
    if costs:
        judged = {k: c for k, c in costs.items() if k != "ipv4"}
        trips = max(c["redis_round_trips"] for c in judged.values())
        dns = max(c["dns_repeat"] for c in costs.values())
        rows.append(("Redis round trips per decision == 1 (the journal's background write aside)",
                     f"{_f(trips, 2)} (max over kinds; IPv4: "
                     f"{_f(costs['ipv4']['redis_round_trips'], 2)})", trips <= 1.0 and trips > 0))
        rows.append(("DNS queries for a repeat sender within TTL == 0", _f(dns, 2), dns == 0))
    points = results.get("rss_points")
    if points:
        start = results["rss_from"]
        growth = rss_growth(points, start)
        rows.append((f"daemon RSS growth, message {start:,} -> {points[-1][0]:,}, < 10%",
                     f"{growth * 100:+.1f}%", None if math.isnan(growth) else growth < 0.10))
    return rows


def _met(value: float, target: float, strict: bool = False):
    if value is None or math.isnan(value):
        return None
    return value > target if strict else value >= target


def goals_section(rows: list, notes: dict) -> str:
    table = [[goal, measured, {True: "met", False: "MISSED", None: "n/a"}[met],
              notes.get(goal, "")] for goal, measured, met in rows]
    return "Goals (each measured in this run)\n\n" + _table(["goal", "measured", "", "note"],
                                                             table)


def render(results: dict, notes: dict | None = None) -> str:
    sections = []
    if results.get("decision"):
        sections.append(decision_section(results["decision"]))
    if results.get("mta_samples"):
        sections.append(mta_section(results["mta_samples"], results["mta_levels"],
                                    results["mta_rounds"]))
    if results.get("milter_rows"):
        sections.append(milter_section(results["milter_rows"], results.get("null_rows", [])))
    if results.get("costs"):
        sections.append(costs_section(results["costs"]))
    if results.get("rss_points") or results.get("redis_memory"):
        sections.append(memory_section(results.get("rss_points"), results.get("redis_memory")))
    sections.append(goals_section(goals(results), notes or {}))
    return "\n\n".join(sections) + "\n"
