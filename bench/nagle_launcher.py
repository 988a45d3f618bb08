"""mx6milter with TCP_NODELAY left off: the "before" of the TCP A/B.

Not a product option: the benchmark replaces the one function that sets
TCP_NODELAY before starting the real daemon, so everything else is identical.
Usage: python -m bench.nagle_launcher -c CONFIG
"""
import sys

from mx6milter import cli, daemon

daemon.set_nodelay_on_listeners = lambda: None

if __name__ == "__main__":
    sys.exit(cli.milter_main())
