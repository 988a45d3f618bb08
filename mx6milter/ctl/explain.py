"""mx6ctl explain: what the milter would do with a message, step by step.

The decision is the milter's own: the Evaluator built as the daemon builds
it (daemon.build_evaluator), fed a Session and a Message made the way the
milter makes them from what the MTA passes (headers as name/value, raw bytes
with CRLF line ends for DKIM, the body cut at [milter] max_message_size).
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import sys

import shtab

from ..addresses import strip_brackets
from ..config import DEFAULT_CONFIG
from .common import UsageError, captured_log, load, read_message_file
from ..model import Message, MessageBuilder, Session, SessionClass
from ..policy import fallback_status, parse_client_ip
from ..service import build_evaluator, describe_redis   # the daemon's own construction
from ..evidence.greenlist import SIGNALS
from ..evidence.whitelist import addressbook_ids
from ..store import StoreUnavailable

_HEADER_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")



def split_message(raw: bytes) -> tuple:
    """(headers as [(name, value bytes)], body) as an MTA hands them to a milter.

    Line ends become CRLF. A folded header keeps its continuation lines, joined
    by LF as the MTA passes them. A line that cannot be a header ends the
    header section and starts the body, as in Postfix.
    """
    raw = re.sub(rb"\r?\n", b"\r\n", raw)
    lines = raw.split(b"\r\n")
    headers = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line == b"":
            index += 1
            break
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
            index += 1
            continue
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            break
        headers.append((name.decode("ascii"), value))
        index += 1
    body = b"\r\n".join(lines[index:])
    return headers, body


def build_message(raw: bytes, max_size: int) -> Message:
    """The Message the milter's eom would build from these bytes."""
    headers, body = split_message(raw)
    builder = MessageBuilder(max_size)
    for name, value in headers:
        builder.add_header(name, value)
    builder.add_body(body)
    return builder.build()


# --- the explanation --------------------------------------------------------------------


def _reply_dict(reply) -> dict | None:
    if reply is None:
        return None
    return {"code": reply.code, "status": reply.status, "lines": list(reply.lines),
            "smtp": reply.as_smtp()}


def per_recipient(evaluator, session: Session, auth) -> list:
    """Which recipients have the From address in their addressbook (informational)."""
    if auth is None or not auth.from_address:
        return []
    sender, ids = addressbook_ids(evaluator.store, evaluator.config.addressbook.fold_local_part,
                                  auth.from_address, session.recipients)
    if not sender:
        return []
    try:
        hits = evaluator.store.lookup({"ab": [(rid, sender) for _, rid in ids if rid]})["ab"]
    except StoreUnavailable:
        return []
    sources = {}
    for hit in hits:
        sources.setdefault(hit.key, []).append(hit.source)
    return [{"recipient": rcpt, "knows_sender": rid in sources,
             "sources": sorted(sources.get(rid, []))} for rcpt, rid in ids]


FALLBACK_MEANINGS = {
    "redis-unavailable": "Redis could not be read",
    "dns-unavailable": "a DNS lookup failed or the DNS time budget was spent",
    "not-authenticated": "neither SPF nor DKIM passed",
    "no-positive-evidence": "authenticated, but nothing positive is known",
}


def _fallback(policy, decision, evidence) -> dict | None:
    """Why the fallback reply has its status code, and the key that sets it."""
    if decision.reply is None and decision.would_reply is None:
        return None
    reason, key, status = fallback_status(policy, evidence)
    return {"reason": reason, "meaning": FALLBACK_MEANINGS[reason], "status": status,
            "key": f"[policy] {key}"}


def explain(evaluator, session: Session, message: Message) -> dict:
    outcome = evaluator.evaluate(session, message)
    decision, evidence = outcome.decision, outcome.evidence
    header = None
    if decision.header:
        header = {"name": evaluator.config.policy.verdict_header, "value": decision.header}
    auth = outcome.auth
    return {
        "session": {"client_ip": session.client_ip, "helo": session.helo,
                    "mail_from": session.mail_from, "recipients": list(session.recipients),
                    "auth_user": session.auth_authen, "class": evidence.session_class.value,
                    "judged": evidence.session_class is SessionClass.IPV6},
        "checks": [{"kind": f.kind, "result": f.result, "detail": f.detail} for f in evidence.checks],
        "authenticated_domains": {way: list(outcome.identities.get(way, ()))
                                  for way in ("dkim", "spf", "dmarc", "arc")},
        "from_address": auth.from_address if auth else "",
        "addressbook": per_recipient(evaluator, session, auth),
        "failures": list(evidence.failures),
        "auth_results": evidence.auth_results,
        "tier": decision.tier.value,
        "action": decision.action.value,
        "reasons": list(decision.reasons),
        "fallback": _fallback(evaluator.config.policy, decision, evidence),
        "header": header,
        "reply": _reply_dict(decision.reply),
        "would_reply": _reply_dict(decision.would_reply),
        "elapsed_ms": round(outcome.elapsed_ms, 1),
    }


def accepting_commands(result: dict, config_option: str = "", greenlist=None) -> list:
    """For a judged message that fell back: the mx6ctl commands after which it would have
    been accepted, as {"command", "tier"}. CONFIG_OPTION is "-c FILE" or empty; GREENLIST
    the [greenlist] section (a greenlisted network is offered when it would suffice)."""
    session = result["session"]
    if not session["judged"] or result["tier"] != "none":
        return []
    ctl = "mx6ctl " + (config_option + " " if config_option else "")
    client = shlex.quote(session["client_ip"])
    out = [{"command": f"{ctl}ip add {client}", "tier": "whitelisted"}]
    domains = result["authenticated_domains"]
    seen = set()
    for way in ("dmarc", "arc", "dkim", "spf"):  # the strongest requirement each domain meets
        for domain in domains.get(way, ()):
            if domain not in seen:
                seen.add(domain)
                require = "" if way in ("dmarc", "arc") else f" --require {way}"   # arc meets dmarc
                out.append({"command": f"{ctl}domain add {shlex.quote(domain)}{require}",
                            "tier": "whitelisted"})
    sender = result["from_address"]
    if sender and domains["dmarc"]:               # an addressbook needs the From domain aligned
        known = {row["recipient"] for row in result["addressbook"] if row["knows_sender"]}
        for rcpt in session["recipients"]:
            if rcpt not in known:
                out.append({"command": f"{ctl}addressbook add {shlex.quote(rcpt)} {shlex.quote(sender)}",
                            "tier": "whitelisted (with the others of this kind)"
                            if len(session["recipients"]) > 1 else "whitelisted"})
    others = {c["kind"] for c in result["checks"] if c["result"] == "pass" and c["kind"] in SIGNALS}
    if greenlist is not None and greenlist.networks and len(others - {"network"}) + 1 >= \
            greenlist.min_signals:
        out.append({"command": f"{ctl}green add {client}",
                    "tier": "greenlisted (subject to content filtering)"})
    return out


def render_text(result: dict) -> str:
    out = []
    s = result["session"]
    out.append("Session")
    out.append(f"  client ip     {s['client_ip']}")
    out.append(f"  helo          {s['helo'] or '(none)'}")
    out.append(f"  mail from     <{s['mail_from']}>")
    out.append("  recipients    " + " ".join(f"<{r}>" for r in s["recipients"]))
    if s["auth_user"]:
        out.append(f"  auth user     {s['auth_user']}")
    out.append(f"  class         {s['class']}: " + (
        "judged" if s["judged"] else "not judged, passed untouched"))
    out.append("Checks, in the order the milter makes them")
    for check in result["checks"]:
        out.append(f"  {check['kind']:<13} {check['result']:<15} {check['detail']}".rstrip())
    if s["judged"]:
        out.append("Whitelists looked up")
        out.append(f"  ip            every prefix containing {s['client_ip']}")
        domains = result["authenticated_domains"]
        listed = ", ".join(f"{d} ({how})" for how in ("dkim", "spf", "dmarc", "arc") for d in domains[how])
        out.append("  domain        " + (f"authenticated domains and their parents: {listed}"
                                         if listed else "nothing authenticated, nothing to look up"))
        if result["addressbook"]:
            out.append(f"  addressbook   From {result['from_address']} in the addressbook of:")
            for row in result["addressbook"]:
                known = ("yes, source " + ",".join(row["sources"])) if row["knows_sender"] else "no"
                out.append(f"                  {row['recipient']}: {known}")
        else:
            out.append("  addressbook   not looked up (see the addressbook check)")
        out.append("Failures        " + (", ".join(result["failures"]) or "none"))
    return "\n".join(out + _render_decision(result))


def _render_decision(result: dict) -> list:
    out = ["Decision"]
    out.append(f"  tier          {result['tier']}")
    out.append(f"  action        {result['action']}")
    out.append(f"  reasons       {', '.join(result['reasons'])}")
    fallback = result["fallback"]
    if fallback:
        out.append(f"  status        {fallback['status']} ({fallback['meaning']}; "
                   f"{fallback['key']})")
    if result["action"] == "accept":
        if result["auth_results"] or result["header"]:
            out.append("Headers added")
            if result["auth_results"]:
                out.append(f"  Authentication-Results: {result['auth_results']}")
            if result["header"]:
                out.append(f"  {result['header']['name']}: {result['header']['value']}")
        if result["would_reply"]:
            out.append("SMTP reply: accepted (report mode); the fallback would have been")
            out += ["  " + line for line in result["would_reply"]["smtp"].split("\r\n")]
        else:
            out.append("SMTP reply: accepted (the MTA's own 250)")
    else:
        out.append("SMTP reply")
        out += ["  " + line for line in result["reply"]["smtp"].split("\r\n")]
    if result.get("would_accept"):      # added by cmd_explain, which knows the config file
        out.append("Would have been accepted after any one of")
        out += [f"  {row['command']:<60} # {row['tier']}" for row in result["would_accept"]]
    return out


def cmd_explain(args) -> int:
    config = load(args)
    if parse_client_ip(args.client_ip) is None:
        raise UsageError(f"--client-ip {args.client_ip!r}: not an IP address")
    session = Session(client_ip=args.client_ip, helo=args.helo,
                      mail_from=strip_brackets(args.mail_from),
                      recipients=[strip_brackets(r) for r in args.rcpt],
                      auth_authen=args.auth_user, queue_id="explain")
    message = build_message(read_message_file(args.message), config.milter.max_message_size)
    with captured_log() as records:     # reported below in mx6ctl's words, once
        result = explain(build_evaluator(config), session, message)
    config_option = "" if args.config == DEFAULT_CONFIG else f"-c {shlex.quote(args.config)}"
    result["would_accept"] = accepting_commands(result, config_option, config.greenlist)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_text(result))
    redis_down = "redis-unavailable" in result["failures"]
    for record in records:
        text = record.getMessage()
        if record.levelno >= logging.WARNING and not (redis_down and text.startswith("redis unavailable")):
            print(f"mx6ctl: {record.levelname.lower()}: {text}", file=sys.stderr)
    if redis_down:
        print(f"mx6ctl: Redis at {describe_redis(config.redis)} did not answer (is it running? see "
              f"[redis] url in {args.config}); the milter answers as above until it does",
              file=sys.stderr)
        return 1
    return 0


def register_explain(sub) -> None:
    p = sub.add_parser("explain", help="show what the milter would do with a message, and why",
                       description="Run the milter's evidence gathering and decision on "
                                   "MESSAGE_FILE (- for standard input) as if it arrived with "
                                   "this envelope, and print every check, the tier, the verdict "
                                   "and the exact SMTP reply; after a fallback, the mx6ctl "
                                   "commands that would have accepted it. Exit 0, or 1 when "
                                   "Redis did not answer.",
                       examples=("mx6ctl explain --client-ip 2001:db8::25 --helo mx.partner.example "
                                 "--mail-from bob@partner.example --rcpt alice@example.org msg.eml",))
    p.add_argument("--client-ip", required=True, metavar="IP",
                   help="the SMTP client's address, e.g. 2001:db8::25")
    p.add_argument("--helo", default="", metavar="NAME", help="the client's HELO/EHLO name")
    p.add_argument("--mail-from", required=True, metavar="ADDR", help="envelope sender; '' for <>")
    p.add_argument("--rcpt", required=True, action="append", metavar="ADDR",
                   help="envelope recipient; repeat for several")
    p.add_argument("--auth-user", default="", metavar="NAME",
                   help="as if the client had authenticated (SMTP AUTH) as NAME")
    p.add_argument("--json", action="store_true", help="the explanation as JSON")
    p.add_argument("message", metavar="MESSAGE_FILE",
                   help="the message as received (headers and body); - for standard input"
                   ).complete = shtab.FILE  # type: ignore[attr-defined]
    p.set_defaults(func=cmd_explain)
