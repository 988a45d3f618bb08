#!/bin/sh
# Install everything mx6milter, its tests and its benchmarks need on Debian 12:
# system packages (as root, or through sudo) and a virtual environment in .venv.
# Idempotent: a second run installs nothing new and takes a few seconds.
set -eu
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="python3 python3-venv python3-dev gcc libmilter-dev redis-server redis-tools publicsuffix man-db \
postfix bind9 bind9-utils miltertest opendkim opendkim-tools opendmarc swaks \
iproute2 procps util-linux openssl rspamd m4 liblockfile1 libwrap0 libio-socket-inet6-perl systemd \
libcrypt1 libdb5.3 libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libnsl2 libpcre2-8-0 \
libevent-2.1-7 libpam0g libssl3 zlib1g prometheus dh-virtualenv debhelper dpkg-dev"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for pkg in $SYSTEM_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "install.sh: installing system packages:$missing"
    # Postfix asks questions unless told there is nothing to configure.
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # The packages must not start system-wide daemons (named on port 53, a
    # second Redis...): mx6milter's scripts and tests start their own instances.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.mx6milter-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    # bench: matplotlib draws the benchmark's plots; the bench smoke test checks them
    .venv/bin/pip install -q -e '.[test,bench]'
    touch "$stamp"
fi
# A real Sendmail for the tests, unpacked beside Postfix (see that script).
scripts/install-sendmail.sh
# Exim and OpenSMTPD for the sender matrix (bench/senders.py), unpacked the same
# way; the libraries they link against are among SYSTEM_PACKAGES (their Depends).
scripts/install-senders.sh
