#!/bin/sh
# Real sending MTAs for the sender matrix (bench/senders.py), beside Postfix.
# Debian's exim4-daemon-light conflicts with postfix (both are "the" mail
# transport agent), so, as for Sendmail, its binary is unpacked into
# .venv/senders instead of installed. Its libraries are ordinary packages
# (SYSTEM_PACKAGES in install.sh). Exim is built to run as the user
# Debian-exim, which is created here as a system user if missing.
# Idempotent.
set -eu
cd "$(dirname "$0")/.."
DEST=.venv/senders
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
if ! getent passwd Debian-exim >/dev/null; then
    as_root adduser --system --group --no-create-home --home /nonexistent --quiet \
        --allow-bad-names Debian-exim
fi
if [ -x "$DEST/usr/sbin/exim4" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
chown _apt "$tmp" 2>/dev/null || true   # apt downloads as user _apt where it can
if ! (cd "$tmp" && apt-get download -q exim4-daemon-light); then
    as_root apt-get update -qq
    (cd "$tmp" && apt-get download -q exim4-daemon-light)
fi
mkdir -p "$DEST"
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$DEST"
done
echo "install-senders.sh: Exim $(dpkg-deb -f "$tmp"/exim4-daemon-light_*.deb Version) unpacked into $DEST"
