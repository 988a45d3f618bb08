#!/bin/sh
# Install what the tests need (see install.sh), run ruff and mypy, then the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k redis -x
set -u
cd "$(dirname "$0")/.."
scripts/install.sh || exit 1
# Lint and type checks first (settings in pyproject.toml); a finding fails the run.
.venv/bin/ruff check mx6milter tests bench || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" = 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$status"
