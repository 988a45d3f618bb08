"""Entry points: ``mx6milter`` (the daemon) and ``mx6ctl`` (the operator's tool)."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import DEFAULT_CONFIG, ConfigError, PolicySection, load_config
from .evidence.auth import load_public_suffix_list
from .privileges import check_names


def milter_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mx6milter",
        description="Milter that accepts mail over IPv6 only on positive evidence\n"
                    "and pushes the rest back to IPv4. See mx6milter(8), mx6milter.conf(5).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               f"  mx6milter -c {DEFAULT_CONFIG} --check-config\n"
               "  systemctl enable --now mx6milter\n")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration and exit: 0 if good, 2 if not")
    parser.add_argument("--version", action="version", version=f"mx6milter {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        check_names(config)        # the accounts exist on this machine
        load_public_suffix_list(config.policy.psl_file, config.where("policy", "psl_file"))
        if config.rdap.enabled:
            from .evidence.rdap_fetch import load_bootstraps
            load_bootstraps(config.rdap)  # the RDAP bootstrap files can be read
    except ConfigError as err:
        print(f"mx6milter: {err}", file=sys.stderr)
        return 2
    if args.check_config:
        return check_config(args.config, config)
    from .daemon import Daemon, Supervisor, setup_logging   # pymilter is only needed to run
    setup_logging(config)
    try:
        return (Supervisor if config.milter.processes > 1 else Daemon)(config).run()
    except ConfigError as err:
        print(f"mx6milter: {err}", file=sys.stderr)
        return 2


def check_config(path: str, config) -> int:
    """--check-config beyond the syntax: the secret files can be read (as the daemon will
    at start), and warnings for settings a production MX should not keep."""
    from .service import read_redis_password, read_secret
    try:
        read_secret(config.addressbook.secret_file)
        read_redis_password(config.redis.password_file)
    except ConfigError as err:
        print(f"mx6milter: {path}: {err}", file=sys.stderr)
        return 2
    if config.policy.authserv_id == PolicySection().authserv_id:
        print(f"mx6milter: warning: {path}: [policy] authserv_id is left at its default "
              f"({config.policy.authserv_id!r}); set it to this MX's host name, the name "
              "its Authentication-Results and verdict headers are trusted by",
              file=sys.stderr)
    print(f"{path}: OK (mode {config.policy.mode}, socket {config.milter.socket})")
    return 0


def ctl_main(argv=None) -> int:
    from . import ctl
    return ctl.main(argv)


if __name__ == "__main__":
    sys.exit(milter_main())
