"""mx6ctl verbs for MX6 on the wire: plan, send, dns, check-domain.

``plan``, ``send`` and ``check-domain`` resolve through ``[dns] nameservers``
of the configuration, or through ``--nameserver`` (then the configuration is
not read). ``send`` recognises the fallback reply by ``[policy] mx6_code`` and
``mx6_status``, or by ``--fallback-code`` and ``--fallback-status``.
"""
from __future__ import annotations

import json
import re
import socket

from ..outbound import zone
from ..outbound.audit import check_domain
from ..outbound.plan import SMTP_PORT, BadName, describe, normalize_domain, resolve_plan
from ..outbound import sender
from ..config import PolicySection, _nameservers, load_config
from .common import UsageError, read_message_file
from ..dns import Resolver

EX_TEMPFAIL = 75


def _usage(text: str) -> Exception:
    return UsageError(text)


def _setup(args):
    """(resolver, fallback code, fallback status) from --nameserver or the config."""
    if not 0 <= args.dns_timeout <= 60:           # also refuses nan, which waits forever
        raise _usage("--dns-timeout: expected seconds between 0 (the default) and 60")
    if args.nameserver:
        try:
            servers = _nameservers(" ".join(args.nameserver))
        except ValueError as err:
            raise _usage(f"--nameserver: {err}") from None
        return (Resolver(servers, args.dns_timeout or 2.0), PolicySection().mx6_code,
                PolicySection().mx6_status)
    config = load_config(args.config)
    resolver = Resolver(config.dns.nameservers, args.dns_timeout or config.dns.timeout,
                        config.dns.cache_size, cache_bytes=config.dns.cache_bytes)
    return resolver, config.policy.mx6_code, config.policy.mx6_status


def _domain(text: str) -> str:
    try:
        return normalize_domain(text)
    except BadName as err:
        raise _usage(str(err)) from None


def _add_dns_options(p) -> None:
    p.add_argument("--nameserver", action="append", default=[], metavar="HOST[:PORT]",
                   help="ask this DNS server instead of [dns] nameservers (the configuration "
                        "is then not read); repeatable")
    p.add_argument("--dns-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="per-lookup timeout (default: [dns] timeout, or 2 with --nameserver)")


# --- plan ------------------------------------------------------------------------------


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise _usage(f"--port {port}: out of range")


def cmd_plan(args) -> int:
    domain = _domain(args.domain)
    _check_port(args.port)
    resolver, code, status = _setup(args)
    plan = resolve_plan(resolver, domain, aware=not args.unaware, mx_port=args.port)
    steps = describe(plan, f"{code} {status}")
    if args.json:
        print(json.dumps({"domain": plan.domain, "aware": plan.aware, "route": plan.route,
                          "steps": steps, "lookups": [list(x) for x in plan.lookups],
                          "errors": list(plan.errors),
                          "attempts": [a.__dict__ for a in plan.attempts()]}, indent=2))
    else:
        print("\n".join(steps))
    return EX_TEMPFAIL if plan.temporary else 0


def register_plan(sub) -> None:
    p = sub.add_parser("plan", help="what an MX6-aware sender would do for DOMAIN, step by step",
                       description="Resolve DOMAIN as an MX6-aware sender does and print the "
                                   "plan in the words of the MX6 proposal. Exit 0, or 75 after "
                                   "a temporary DNS failure.",
                       examples=("mx6ctl plan with6.example", "mx6ctl plan --unaware only4.example"))
    p.add_argument("domain", metavar="DOMAIN", help="the recipient domain")
    p.add_argument("--unaware", action="store_true",
                   help="the plan of a plain, MX6-unaware sender instead (MX, IPv6 and IPv4)")
    p.add_argument("--port", type=int, default=SMTP_PORT,
                   help="port of the MX route (test/debug; default 25; SRV gives its own)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_dns_options(p)
    p.set_defaults(func=cmd_plan)


# --- send ------------------------------------------------------------------------------


def _read_message(path: str) -> bytes:
    data = read_message_file(path)
    if not data.strip():
        raise _usage(f"{path}: empty message")
    return data


def cmd_send(args) -> int:
    message = _read_message(args.message)
    resolver, code, status = _setup(args)
    if args.fallback_code:
        if not re.fullmatch(r"5\d\d", args.fallback_code):
            raise _usage("--fallback-code: expected a 5xx code such as 550")
        code = args.fallback_code
    if args.fallback_status:
        if not re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", args.fallback_status):
            raise _usage("--fallback-status: expected an enhanced status such as 5.5.7")
        status = args.fallback_status
    helo = args.helo or socket.getfqdn()
    if not re.fullmatch(r"[A-Za-z0-9._:\[\]-]{1,255}", helo):
        raise _usage(f"--helo {helo!r}: not a host name or address literal")
    _check_port(args.port)
    if not 0 < args.timeout <= 3600:
        raise _usage("--timeout: expected seconds, more than 0 and at most 3600")
    try:
        options = sender.Options(
            helo=helo, aware=not args.unaware, fallback_code=code, fallback_status=status,
            mx_port=args.port, source_ipv4=sender.check_bind_address(args.source_ipv4, 4),
            source_ipv6=sender.check_bind_address(args.source_ipv6, 6),
            connect_timeout=args.timeout, command_timeout=args.timeout,
            data_timeout=2 * args.timeout)
        transcript = sender.Transcript()
        result = sender.Sender(resolver, options, transcript).send(args.mail_from, args.rcpt,
                                                                   message)
    except (sender.BadSendOption, BadName) as err:
        raise _usage(str(err)) from None
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print("\n".join(transcript.lines()))
    return result.exit_code


def register_send(sub) -> None:
    p = sub.add_parser(
        "send", help="deliver a message as an MX6-aware sender, with a transcript",
        description="Deliver MESSAGE_FILE ('-' for standard input) by the plan of `mx6ctl plan`: "
                    "IPv6 first where the SRV record allows it, IPv4 after the fallback reply, "
                    "the next host after 4xx. Exit 0 when delivered to every recipient, 75 "
                    "when something is deferred, 69 when something bounced, 2 on bad input.",
        examples=("mx6ctl send --from me@example.org --to you@with6.example message.eml",))
    p.add_argument("message", metavar="MESSAGE_FILE", help="the message to send; - for standard input")
    p.add_argument("--from", dest="mail_from", required=True, metavar="ADDR",
                   help="envelope sender (MAIL FROM); '' for the null sender")
    p.add_argument("--to", dest="rcpt", action="append", required=True, metavar="ADDR",
                   help="envelope recipient (RCPT TO); repeatable")
    p.add_argument("--json", action="store_true", help="the result and transcript as JSON")
    p.add_argument("--unaware", action="store_true",
                   help="behave as a plain, MX6-unaware sender (MX, IPv6 and IPv4)")
    p.add_argument("--helo", default="", help="EHLO name (default: this host's FQDN)")
    p.add_argument("--port", type=int, default=SMTP_PORT,
                   help="port of the MX route (test/debug; default 25; SRV gives its own)")
    p.add_argument("--source-ipv4", metavar="ADDR", help="bind IPv4 connections to ADDR")
    p.add_argument("--source-ipv6", metavar="ADDR", help="bind IPv6 connections to ADDR")
    p.add_argument("--fallback-code", default="", help="fallback reply code (default: "
                   "[policy] mx6_code, 550)")
    p.add_argument("--fallback-status", default="", help="fallback enhanced status code "
                   "(default: [policy] mx6_status, 5.5.7)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="connect and command timeout (default 300; twice that for the "
                        "reply to the message)")
    _add_dns_options(p)
    p.set_defaults(func=cmd_send)


# --- dns ---------------------------------------------------------------------------------


def cmd_dns(args) -> int:
    if args.ttl is not None and not 0 <= args.ttl <= 2147483647:
        raise _usage(f"--ttl {args.ttl}: out of range")
    try:
        lines = zone.zone_records(args.domain, args.mx6_host, args.ipv4, args.ipv6,
                                 args.mx_host, args.port, args.ttl)
    except ValueError as err:        # BadName is a ValueError
        raise _usage(str(err)) from None
    print("\n".join(lines))
    return 0


def register_dns(sub) -> None:
    p = sub.add_parser("dns", help="the DNS records an MX6 receiver publishes",
                       description="Print zone-file records for DOMAIN as the MX6 proposal asks: "
                                   "the MX (IPv4 only), the _mx6._tcp SRV record, and the A and "
                                   "AAAA records of the MX6 host.",
                       examples=("mx6ctl dns --domain with6.example --mx6-host mx6.with6.example "
                                 "--ipv4 192.0.2.25 --ipv6 2001:db8::25",))
    p.add_argument("--domain", required=True, help="the mail domain, e.g. with6.example")
    p.add_argument("--mx6-host", required=True, help="the SRV target, e.g. mx6.with6.example")
    p.add_argument("--ipv4", action="append", required=True, metavar="ADDR",
                   help="IPv4 address of the MX host and of the MX6 host; repeatable")
    p.add_argument("--ipv6", action="append", required=True, metavar="ADDR",
                   help="IPv6 address of the MX6 host; repeatable")
    p.add_argument("--mx-host", default="", help="the MX host (default mx.DOMAIN)")
    p.add_argument("--port", type=int, default=SMTP_PORT,
                   help="SRV port (default 25; the proposal advises against others)")
    p.add_argument("--ttl", type=int, default=None, help="TTL on every record (default: the zone's)")
    p.set_defaults(func=cmd_dns)


# --- check-domain ---------------------------------------------------------------------------


def cmd_check_domain(args) -> int:
    domain = _domain(args.domain)
    resolver, _, _ = _setup(args)
    report = check_domain(resolver, domain)
    if args.json:
        print(json.dumps({"domain": report.domain, "temporary": report.temporary,
                          "departs": report.departs,
                          "findings": [f.__dict__ for f in report.items]}, indent=2))
    else:
        for finding in report.items:
            print(finding)
    if report.temporary:
        return EX_TEMPFAIL
    return 1 if report.departs else 0


def register_check_domain(sub) -> None:
    p = sub.add_parser("check-domain", help="audit DOMAIN's published MX6 records",
                       description="Look up DOMAIN's MX and _mx6._tcp SRV records and their "
                                   "addresses, and warn where they depart from the MX6 proposal. "
                                   "Exit 0 if they conform, 1 if they depart, 75 after a "
                                   "temporary DNS failure.",
                       examples=("mx6ctl check-domain with6.example",))
    p.add_argument("domain", metavar="DOMAIN", help="the mail domain to audit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_dns_options(p)
    p.set_defaults(func=cmd_check_domain)


def register(sub) -> None:
    """All MX6 verbs; ctl.REGISTRARS lists this."""
    register_plan(sub)
    register_send(sub)
    register_dns(sub)
    register_check_domain(sub)
