#!/bin/sh
# A real Sendmail for the tests, beside Postfix. Debian's sendmail-bin
# conflicts with postfix (both are "the" mail transport agent), so instead of
# installing it we unpack its binary and sendmail-cf's m4 files into
# .venv/sendmail; nothing outside the checkout changes. The libraries it
# links and m4 are ordinary packages (SYSTEM_PACKAGES in install.sh).
# Idempotent. The tests use it through tests/sendmail.py.
set -eu
cd "$(dirname "$0")/.."
DEST=.venv/sendmail
if [ -x "$DEST/usr/libexec/sendmail/sendmail" ] && [ -f "$DEST/usr/share/sendmail/cf/m4/cf.m4" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
chown _apt "$tmp" 2>/dev/null || true   # apt downloads as user _apt where it can
if ! (cd "$tmp" && apt-get download -q sendmail-bin sendmail-cf); then
    # No package lists yet on a fresh machine.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
    (cd "$tmp" && apt-get download -q sendmail-bin sendmail-cf)
fi
mkdir -p "$DEST"
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$DEST"
done
echo "install-sendmail.sh: Sendmail $(dpkg-deb -f "$tmp"/sendmail-bin_*.deb Version) unpacked into $DEST"
