#!/bin/sh
# Set up everything (install.sh) and start the demo: a local Redis on
# 127.0.0.1:6379, mx6milter on unix:/run/mx6milter/mx6milter.sock, and a
# private Postfix on [::1]:2525 and 127.0.0.1:2525 that uses it and hands
# what it accepts to smtp-sink (run/postfix/sink/). Prints how to send to it.
# Logs and pid files go to ./run/. Stop everything with: scripts/run.sh stop
#
# MX6MILTER_CONFIG=FILE runs the milter with FILE instead of run/mx6milter.conf
# (contrib/mx6milter.conf with socket_group = postfix, so Postfix may connect).
# MX6_DEMO_PORT=N puts Postfix on port N instead of 2525.
set -eu
cd "$(dirname "$0")/.."
RUN=$(pwd)/run
PORT=${MX6_DEMO_PORT:-2525}
mkdir -p "$RUN"

stop() {
    if [ -f "$RUN/postfix/etc/main.cf" ]; then
        .venv/bin/python tests/support/postfix.py stop --dir "$RUN/postfix" && echo "stopped Postfix"
    fi
    for name in mx6milter redis; do
        if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
            kill "$(cat "$RUN/$name.pid")" && echo "stopped $name"
        fi
        rm -f "$RUN/$name.pid"
    done
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi

scripts/install.sh

if [ -n "${MX6MILTER_CONFIG:-}" ]; then
    CONFIG=$MX6MILTER_CONFIG
else
    CONFIG=run/mx6milter.conf
    sed 's/^socket_group =.*/socket_group = postfix/' contrib/mx6milter.conf > "$CONFIG"
fi

if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "run.sh: Redis already answers on 127.0.0.1:6379"
else
    redis-server --bind 127.0.0.1 --port 6379 --dir "$RUN" --daemonize yes \
        --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
    i=0
    until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "run.sh: Redis did not start; see $RUN/redis.log"; exit 1; }
        sleep 0.1
    done
    echo "run.sh: started Redis on 127.0.0.1:6379"
fi

.venv/bin/mx6milter -c "$CONFIG" --check-config
socket=$(sed -n 's/^socket *= *unix:\(.*\)$/\1/p' "$CONFIG")
if [ -f "$RUN/mx6milter.pid" ] && kill -0 "$(cat "$RUN/mx6milter.pid")" 2>/dev/null; then
    echo "run.sh: mx6milter already running (pid $(cat "$RUN/mx6milter.pid"))"
else
    nohup .venv/bin/mx6milter -c "$CONFIG" >>"$RUN/mx6milter.log" 2>&1 &
    echo $! > "$RUN/mx6milter.pid"
    i=0
    until [ -z "$socket" ] || { [ -S "$socket" ] && grep -q "listening on" "$RUN/mx6milter.log"; }; do
        i=$((i + 1)); [ $i -lt 200 ] || { echo "run.sh: mx6milter did not start; see $RUN/mx6milter.log"; exit 1; }
        sleep 0.1
    done
    echo "run.sh: started mx6milter (pid $(cat "$RUN/mx6milter.pid")), config $CONFIG, log $RUN/mx6milter.log"
fi

# The demo MTA: contrib/postfix/main.cf, except that its smtpd is not chrooted
# and so reaches the milter's socket in /run directly.
if [ -n "$socket" ]; then
    milter="unix:$socket"
else
    milter="inet:$(sed -n 's/^socket *= *inet6\{0,1\}:\([0-9]*\)@\(.*\)$/\2:\1/p' "$CONFIG" | tr -d '[]')"
fi
{ cat contrib/postfix/main.cf; echo; echo "smtpd_milters = $milter"; } > "$RUN/postfix-main.cf"
if [ -f "$RUN/postfix/etc/main.cf" ] && postfix -c "$RUN/postfix/etc" status >/dev/null 2>&1; then
    echo "run.sh: Postfix already running ($RUN/postfix)"
else
    .venv/bin/python tests/support/postfix.py start --dir "$RUN/postfix" --port "$PORT" \
        --main-cf "$RUN/postfix-main.cf" --no-chroot
fi

cat <<MSG

Running: Redis, mx6milter ($CONFIG), Postfix on [::1]:$PORT and 127.0.0.1:$PORT.

Send over IPv6: the milter knows nothing good about ::1, so Postfix answers
451 4.7.1 and the sender would retry over IPv4:
    swaks --server ::1 --port $PORT --from sender@example.net --to user@example.org
Send over IPv4: never judged, accepted and delivered:
    swaks --server 127.0.0.1 --port $PORT --from sender@example.net --to user@example.org
Whitelist ::1, then the IPv6 command above is accepted (headers X-MX6-Verdict
and Authentication-Results added):
    .venv/bin/mx6ctl -c $CONFIG ip add ::1/128
What arrived:      ls $RUN/postfix/sink/
Why:               $RUN/mx6milter.log, $RUN/postfix/maillog
Stop everything:   scripts/run.sh stop
MSG
