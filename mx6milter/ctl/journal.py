"""mx6ctl report and why: what the milters decided and what became of it (journal.py).

    mx6ctl report [--since DURATION] [--top N] [--json]
    mx6ctl why QUEUE_ID | --client IP | --from ADDRESS [--json]

Both read Redis only, so they cover every MX host sharing it.
"""
from __future__ import annotations

import argparse
import datetime
import email.utils
import ipaddress
import json
import shlex

from ..config import DEFAULT_CONFIG
from .common import UsageError, load, now, open_store
from ..entries import EntryError, duration_seconds
from ..journal import DECISION_BOARDS, parse_checks
from ..store import HOUR

TIERS = ("whitelisted", "greenlisted", "none")


# --- report ---------------------------------------------------------------------------------


def percentile(values: list, share: float) -> float | None:
    """The nearest-rank percentile (0 < share <= 1) of VALUES, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))       # ceil, at least the first
    return ordered[int(rank) - 1]


def _command(config_path: str, *words: str) -> str:
    prefix = ["mx6ctl"] + ([] if config_path == DEFAULT_CONFIG else ["-c", config_path])
    return shlex.join(prefix + list(words))


def suggestion(config, config_path: str, board: str, details: dict) -> str:
    """The one mx6ctl command that would accept the next such message, or ""."""
    domain, ways, net = details.get("domain", ""), details.get("ways", []), details.get("net", "")
    if board in ("domain", "helo") and domain and ways:
        require = [] if ways[0] == "dmarc" else ["--require", ways[0]]
        return _command(config_path, "domain", "add", domain, *require)
    if not net:
        return ""
    green = config.greenlist
    if green.networks and green.min_signals == 1:
        return _command(config_path, "green", "add", net)
    return _command(config_path, "ip", "add", net)


def _details(text: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def would_fall_back(store, config, config_path: str, hours, top: int) -> list:
    rows = []
    for board in DECISION_BOARDS:
        counted = store.journal_board(board, hours)
        ranked = sorted(counted.items(), key=lambda item: (-item[1][0], item[0]))[:top]
        for sender, (messages, text) in ranked:
            details = _details(text)
            rows.append({"by": board, "sender": sender, "messages": messages,
                         "authenticated": details.get("ways", []),
                         "lacked": details.get("lacked", []),
                         "suggestion": suggestion(config, config_path, board, details)})
    return rows


def not_recovered(store, config, config_path: str, hours, top: int) -> list:
    """Senders whose fallbacks in HOURS never came back over IPv4."""
    fallen = store.journal_board("fallbacks", hours)
    recovered = store.journal_board("recovered", hours)
    rows = []
    for sender, (count, _) in fallen.items():
        if recovered.get(sender, (0, ""))[0]:
            continue
        domain, _, net = sender.partition(" ")
        rows.append({"from_domain": "" if domain == "-" else domain,
                     "network": "" if net == "-" else net, "fallbacks": count,
                     "suggestion": _command(config_path, "mishandle4xx", "add", net)
                     if net != "-" else ""})
    rows.sort(key=lambda row: (-row["fallbacks"], row["from_domain"], row["network"]))
    return rows[:top]


def build_report(store, config, config_path: str, when: float, since: int, top: int) -> dict:
    hours = range(int((when - since) // HOUR), int(when // HOUR) + 1)
    counters = store.journal_counters(hours)
    decisions = {tier: 0 for tier in TIERS}
    actions, reasons = {}, {}
    for name, count in counters.items():
        kind, _, rest = name.partition(":")
        if kind == "decision":
            tier = rest.partition(":")[0]
            decisions[tier] = decisions.get(tier, 0) + count
            actions[rest.replace(":", "/")] = count
        elif kind in ("reason", "evidence"):
            reasons[rest.replace(":", "/")] = count
    fallbacks, recovered = counters.get("fallbacks", 0), counters.get("recovered", 0)
    delays = store.journal_delays(hours)
    return {
        "since": since, "from": int(when - since), "until": int(when), "mode": config.policy.mode,
        "decisions": decisions, "actions": actions, "reasons": reasons,
        "fallbacks": fallbacks,
        "recovered_over_ipv4": {
            "count": recovered,
            "share": round(recovered / fallbacks, 3) if fallbacks else None,
            "delay_p50_seconds": percentile(delays, 0.5),
            "delay_p90_seconds": percentile(delays, 0.9)},
        "not_recovered": not_recovered(store, config, config_path, hours, top),
        "would_fall_back": would_fall_back(store, config, config_path, hours, top),
    }


def _seconds(value) -> str:
    return "-" if value is None else str(datetime.timedelta(seconds=int(value)))


def render_report(report: dict) -> str:
    out = [f"mx6ctl report: {_stamp(report['from'])} to {_stamp(report['until'])} "
           f"(mode {report['mode']})", "", "Decisions (IPv6 sessions judged)"]
    out += [f"  {tier:<13} {count}" for tier, count in report["decisions"].items()]
    out += ["By tier/action"] + [f"  {name:<28} {n}" for name, n in sorted(report["actions"].items())]
    out += ["By reason (fallbacks) and evidence (accepted)"]
    out += [f"  {name:<28} {n}" for name, n in sorted(report["reasons"].items(),
                                                       key=lambda item: -item[1])]
    rec = report["recovered_over_ipv4"]
    share = "-" if rec["share"] is None else f"{rec['share']:.0%}"
    out += ["", f"Fallbacks (4xx/5xx over IPv6)  {report['fallbacks']}",
            f"  recovered over IPv4          {rec['count']} ({share}); delay p50 "
            f"{_seconds(rec['delay_p50_seconds'])}, p90 {_seconds(rec['delay_p90_seconds'])}",
            "  never came back (greenlist them if they are legitimate senders that mishandle 4xx;"
            " a fallback of the last hours may still be retried):"]
    for row in report["not_recovered"]:
        out.append(f"    {row['fallbacks']:>6}  From {row['from_domain'] or '(unauthenticated)'} "
                   f"via {row['network'] or '?'}")
        if row["suggestion"]:
            out.append(f"            {row['suggestion']}")
    out += ["", "Without evidence: pushed back, or would have been (report mode); "
                "top senders and the command that would accept them"]
    for row in report["would_fall_back"]:
        how = ",".join(row["authenticated"]) or "not authenticated"
        out.append(f"  {row['by']:<6} {row['sender']}  messages={row['messages']}  "
                   f"From authenticated: {how}")
        out.append(f"         lacked: {', '.join(row['lacked']) or '-'}")
        out.append(f"         accept: {row['suggestion'] or '(no single command)'}")
    return "\n".join(out)


def _stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def cmd_report(args) -> int:
    config = load(args)
    try:
        since = duration_seconds(args.since)
    except EntryError as err:
        raise UsageError(f"--since {err}") from None
    limit = config.report.retention_days * 86400
    if since > limit:
        raise UsageError(f"--since {args.since}: longer than [report] retention_days "
                         f"({config.report.retention_days}); older hours are gone")
    report = build_report(open_store(config), config, args.config, now(), since, args.top)
    print(json.dumps(report, indent=2) if args.json else render_report(report))
    return 0


# --- why ------------------------------------------------------------------------------------


def matcher(args):
    """A predicate over stream entries for QUEUE_ID, --client or --from."""
    if args.client:
        try:
            wanted = ipaddress.ip_address(args.client.strip("[]"))
        except ValueError:
            raise UsageError(f"--client {args.client!r}: not an IP address") from None
        return lambda entry: _same_ip(entry.get("client", ""), wanted)
    if args.sender is not None:
        address = args.sender.strip().strip("<>").lower()
        return lambda entry: address in _senders(entry)
    return lambda entry: entry.get("qid") == args.queue_id


def _same_ip(text: str, wanted) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]").removeprefix("IPv6:")) == wanted
    except ValueError:
        return False


def _senders(entry: dict) -> set:
    found = {entry.get("from", "").lower()}
    found |= {addr.lower() for _, addr in email.utils.getaddresses([entry.get("hfrom", "")]) if addr}
    return found


def render_decision(entry: dict) -> str:
    rcpts = entry.get("rcpts", "").split()
    shown = " ".join(f"<{r}>" for r in rcpts)
    count = entry.get("nrcpts", "")
    more = int(count) - len(rcpts) if count.isascii() and count.isdigit() else 0
    try:
        when = _stamp(float(entry.get("t", "")))
    except (ValueError, OverflowError, OSError):
        when = "(no time)"
    out = [f"{when}  {entry.get('host', '?')}  "
           f"queue id {entry.get('qid') or '-'}",
           f"  client        [{entry.get('client', '')}]  helo {entry.get('helo') or '(none)'}",
           f"  mail from     <{entry.get('from', '')}>",
           f"  header From   {entry.get('hfrom') or '(none)'}",
           f"  recipients    {shown}" + (f" and {more} more" if more > 0 else ""),
           "  checks"]
    out += [f"    {f.kind:<13} {f.result:<15} {f.detail}".rstrip()
            for f in parse_checks(entry.get("checks", ""))]
    verdict = f"  verdict       {entry.get('tier')}, {entry.get('action')}: {entry.get('reasons')}"
    out.append(verdict)
    if entry.get("reply"):
        what = "would have answered (report mode)" if entry.get("would") else "answered"
        out.append(f"  {what} {entry['reply']}")
    out.append(f"  took          {entry.get('ms', '?')} ms")
    return "\n".join(out)


def cmd_why(args) -> int:
    if sum(bool(x) for x in (args.queue_id, args.client, args.sender is not None)) != 1:
        raise UsageError("why: give exactly one of QUEUE_ID, --client IP, --from ADDRESS")
    config = load(args)
    match = matcher(args)
    found, scanned = [], 0
    for _, fields in open_store(config).journal_recent(config.report.stream_length):
        scanned += 1
        if match(fields):
            found.append(fields)
    found.reverse()        # oldest first, like a log
    if args.json:
        for entry in found:
            entry["checks"] = [[f.kind, f.result, f.detail] for f in parse_checks(entry["checks"])]
        print(json.dumps(found, indent=2))
    else:
        print("\n\n".join(render_decision(entry) for entry in found) or
              f"no decision found among the last {scanned} (see [report] stream_length)")
    return 0 if found else 1


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number above 0")
    return int(text)


def register(sub) -> None:
    p = sub.add_parser("report", help="what the milters decided, what became of the fallbacks",
                       description="Summarise the decisions of every MX host sharing this Redis: "
                                   "by tier, action and reason; the fallbacks and how many came "
                                   "back over IPv4; the senders that never did; the top senders "
                                   "without evidence, each with the command that would accept it.",
                       examples=("mx6ctl report", "mx6ctl report --since 7d --top 20 --json"))
    p.add_argument("--since", default="24h", metavar="DURATION",
                   help="how far back: 24h (default), 7d, 90m ...; at most [report] retention_days")
    p.add_argument("--top", type=_positive, default=10, metavar="N",
                   help="senders listed per list (default 10)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("why", help="every check of recent decisions, by queue id, client or sender",
                       description="Print every check of the recent decisions (the last [report] "
                                   "stream_length, from every MX host) matching a queue id, a "
                                   "client address or a sender (envelope or From header). Exit 1 "
                                   "when none matches.",
                       examples=("mx6ctl why 4ABCDEF", "mx6ctl why --client 2001:db8::25"))
    p.add_argument("queue_id", nargs="?", default="", metavar="QUEUE_ID",
                   help="the MTA's queue id, as in the log line (queue_id=...)")
    p.add_argument("--client", default="", metavar="IP",
                   help="decisions for this client address")
    p.add_argument("--from", dest="sender", default=None, metavar="ADDRESS",
                   help="decisions for this envelope sender or From address")
    p.add_argument("--json", action="store_true", help="the decisions as JSON")
    p.set_defaults(func=cmd_why)
