"""Entry points: ``mx6milter`` (the daemon) and ``mx6ctl`` (the operator's tool)."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import ConfigError, load_config
from .privileges import check_names

DEFAULT_CONFIG = "/etc/mx6milter/mx6milter.conf"


def milter_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mx6milter",
        description="Milter that accepts mail over IPv6 only on positive evidence "
                    "and pushes the rest back to IPv4.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration and exit: 0 if good, 2 if not")
    parser.add_argument("--version", action="version", version=f"mx6milter {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        check_names(config.milter)        # the accounts exist on this machine
        if config.rdap.enabled:
            from .evidence.rdap_fetch import load_bootstraps
            load_bootstraps(config.rdap)  # the RDAP bootstrap files can be read
    except ConfigError as err:
        print(f"mx6milter: {err}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config}: OK (mode {config.policy.mode}, socket {config.milter.socket})")
        return 0
    from .daemon import Daemon, Supervisor, setup_logging   # pymilter is only needed to run
    setup_logging(config)
    try:
        return (Supervisor if config.milter.processes > 1 else Daemon)(config).run()
    except ConfigError as err:
        print(f"mx6milter: {err}", file=sys.stderr)
        return 2


def ctl_main(argv=None) -> int:
    from . import ctl
    return ctl.main(argv)


if __name__ == "__main__":
    sys.exit(milter_main())
