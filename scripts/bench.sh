#!/bin/sh
# Run the benchmarks (as root): MTA level, milter level, memory. Prints the
# table and writes it to bench/out/DATE-TIME/. See bench/README.rst.
#   scripts/bench.sh            the full run (about an hour on 2 cores)
#   scripts/bench.sh --quick    a few minutes
set -eu
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m bench "$@"
