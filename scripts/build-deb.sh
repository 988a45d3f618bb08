#!/bin/sh
# Build the Debian package of this checkout: dist/mx6milter_VERSION_ARCH.deb
# (or into the directory given as $1). Needs the build dependencies of
# debian/control (scripts/install.sh installs them) and access to PyPI for the
# Python dependencies. The checkout is copied, so the build leaves it untouched.
set -eu
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/mx6milter-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT HUP       # through the EXIT trap: the copy goes too
mkdir "$work/mx6milter"
# The files of the source tree; no virtual environment, runtime or build output.
tar -cf - --exclude=./.git --exclude=./.venv --exclude=./run --exclude=./build \
    --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=./bench/out \
    --exclude=.pytest_cache . | tar -xf - -C "$work/mx6milter"
(cd "$work/mx6milter" && dpkg-buildpackage -b -us -uc --no-sign >"$work/build.log" 2>&1) || {
    tail -n 60 "$work/build.log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
for deb in "$work"/*.deb; do
    cp "$deb" "$out/"
    echo "$out/$(basename "$deb")"
done
