#!/bin/sh
# Real sending MTAs for the sender matrix (bench/senders.py), beside Postfix.
# Debian's exim4-daemon-light and opensmtpd conflict with postfix (each is "the"
# mail transport agent), so, as for Sendmail, their binaries are unpacked into
# .venv/senders instead of installed. Their libraries are ordinary packages
# (SYSTEM_PACKAGES in install.sh). Exim is built to run as the user
# Debian-exim, OpenSMTPD (Debian's build) as opensmtpd and opensmtpq; they are created here as
# system users if missing. Idempotent.
set -eu
cd "$(dirname "$0")/.."
DEST=.venv/senders
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
for user in Debian-exim opensmtpd opensmtpq; do
    if ! getent passwd "$user" >/dev/null; then
        as_root adduser --system --group --no-create-home --home /nonexistent --quiet \
            --allow-bad-names "$user"
    fi
done
if [ -x "$DEST/usr/sbin/exim4" ] && [ -x "$DEST/usr/sbin/smtpd" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
chown _apt "$tmp" 2>/dev/null || true   # apt downloads as user _apt where it can
if ! (cd "$tmp" && apt-get download -q exim4-daemon-light opensmtpd); then
    as_root apt-get update -qq
    (cd "$tmp" && apt-get download -q exim4-daemon-light opensmtpd)
fi
mkdir -p "$DEST"
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$DEST"
done
echo "install-senders.sh: Exim $(dpkg-deb -f "$tmp"/exim4-daemon-light_*.deb Version) and" \
    "OpenSMTPD $(dpkg-deb -f "$tmp"/opensmtpd_*.deb Version) unpacked into $DEST"
