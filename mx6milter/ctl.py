"""mx6ctl: the operator's tool. Each verb group registers its own sub-commands."""
from __future__ import annotations

import argparse
import ipaddress
import sys

import redis

from .config import ConfigError, load_config
from .store import Store, field_to_network, ip_field

DEFAULT_CONFIG = "/etc/mx6milter/mx6milter.conf"


class UsageError(Exception):
    """Bad input from the operator: exit code 2 with the message."""


def parse_ipv6_prefix(text: str) -> ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as err:
        raise UsageError(f"{text!r}: not an IPv6 address or prefix ({err})") from None
    if network.version != 6:
        raise UsageError(f"{text!r}: an IPv4 prefix; the IPv6 whitelist takes IPv6 only "
                         "(IPv4 mail is never judged)")
    if network.network_address.ipv4_mapped is not None:
        raise UsageError(f"{text!r}: IPv4-mapped addresses are treated as IPv4, not judged")
    return network


def open_store(args) -> Store:
    from .daemon import read_secret
    config = load_config(args.config)
    return Store.from_config(config.redis, read_secret(config.addressbook.secret_file))


# --- ip ------------------------------------------------------------------------------


def cmd_ip(args) -> int:
    store = open_store(args)
    if args.action == "list":
        for hit in store.entries("ip", args.source):
            expires = hit.expires
            print(f"{field_to_network(hit.field)}\tsource={hit.source}"
                  + (f"\texpires={expires}" if expires else ""))
        return 0
    if not args.prefixes:
        raise UsageError(f"ip {args.action}: give at least one PREFIX")
    networks = [parse_ipv6_prefix(p) for p in args.prefixes]
    if args.action == "add":
        count = store.add("ip", args.source, [("", ip_field(n), str(args.expires)) for n in networks])
        print(f"added {count} new, {len(networks) - count} already present")
    else:
        count = store.remove("ip", args.source_given, [("", ip_field(n)) for n in networks])
        print(f"removed {count}")
    return 0


def register_ip(sub) -> None:
    p = sub.add_parser("ip", help="the IPv6 address and prefix whitelist")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("prefixes", nargs="*", metavar="PREFIX",
                   help="IPv6 address or prefix, e.g. 2001:db8::25 or 2001:db8:1::/48")
    add_source_options(p)
    p.set_defaults(func=cmd_ip)


def add_source_options(p) -> None:
    p.add_argument("--source", default=None,
                   help="source name of the entries (default: local; list/remove: all)")
    p.add_argument("--expires", type=int, default=0, metavar="UNIX_TIME",
                   help="expiry of added entries as Unix seconds (default: never)")


REGISTRARS = [register_ip]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mx6ctl", description="Manage mx6milter's data in Redis.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "source"):
        args.source_given = args.source
        args.source = args.source or ("local" if getattr(args, "action", "") == "add" else None)
    try:
        return args.func(args)
    except (UsageError, ConfigError) as err:
        print(f"mx6ctl: {err}", file=sys.stderr)
        return 2
    except redis.exceptions.RedisError as err:
        print(f"mx6ctl: Redis: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
