"""mx6ctl: the operator's tool. The parser and the dispatcher; each verb group
registers its own sub-commands (see REGISTRARS) from its own module.

Exit status: 0 done, 2 bad usage, input or configuration, 1 Redis down or
another runtime failure. Expected failures print one clear line, never a
traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

import redis
import shtab

from .. import __version__
from ..config import DEFAULT_CONFIG, ConfigError
from ..store import StoreUnavailable
from .common import UsageError, VerbParser
from .check import register as register_check
from .entries import register_addressbook, register_domain, register_ip, register_stats
from .explain import register_explain
from .greenlist import register as register_greenlist
from .import_export import register_export, register_import
from .journal import register as register_journal
from .mx6 import register as register_mx6
from .sources import register as register_source
from .registrar import register as register_registrar
from .transport_map import register as register_transport_map
from ..entries import EntryError, parse_ipv6_prefix  # noqa: F401  (kept importable from here)

REGISTRARS = [
    register_ip,
    register_domain,
    register_addressbook,
    register_import,
    register_export,
    register_stats,
    register_source,
    register_explain,
    register_mx6,          # plan, send, dns, check-domain
    register_greenlist,    # green, asnlist, mishandle4xx, asn, history (import: ctl_import.IMPORT_KINDS)
    register_registrar,    # registrar (the greenlist's registrar signal, RDAP)
    register_check,        # check: Redis, DNS, the milter socket (a monitoring plugin)
    register_journal,      # report, why
    register_transport_map,  # transport-map (Postfix socketmap: mx6: for MX6 domains)
]


def build_parser() -> argparse.ArgumentParser:
    """mx6ctl's parser. Each verb is a common.VerbParser (``examples=`` at the end of
    its --help); ``--print-completion bash|zsh`` writes completion made from this parser."""
    parser = VerbParser(prog="mx6ctl", description="Manage mx6milter's data in Redis "
                        "and explain its decisions. See mx6ctl(1); COMMAND --help for each verb.",
                        examples=("mx6ctl ip add 2001:db8:25::/48",
                                  "mx6ctl --print-completion bash > /etc/bash_completion.d/mx6ctl"))
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})"
                        ).complete = shtab.FILE  # type: ignore[attr-defined]
    parser.add_argument("--version", action="version", version=f"mx6ctl {__version__}",
                        help="print the version and exit")
    shtab.add_argument_to(parser, "--print-completion",
                          help="print a completion script for this shell and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="the verb; mx6ctl COMMAND --help for its own help")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError, EntryError) as err:
        print(f"mx6ctl: {err}", file=sys.stderr)
        return 2
    except (redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationError) as err:
        print(f"mx6ctl: Redis refused: {err} (check the ACL user and password_file of "
              f"[redis] in {args.config}; see README, Securing Redis)", file=sys.stderr)
        return 1
    except redis.sentinel.MasterNotFoundError as err:     # redis imports it; no sentinel answered
        print(f"mx6ctl: Redis Sentinel: {err} (no sentinel answered with a primary: check "
              f"sentinels, service_name and sentinel_password_file of [redis] in {args.config})",
              file=sys.stderr)
        return 1
    except (redis.exceptions.RedisError, StoreUnavailable) as err:
        print(f"mx6ctl: Redis: {err} (is it running? see [redis] in {args.config})",
              file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`mx6ctl ip list | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("mx6ctl: interrupted", file=sys.stderr)
        return 130

