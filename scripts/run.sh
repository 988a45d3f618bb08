#!/bin/sh
# Set up everything (install.sh) and start the main job: a local Redis on
# 127.0.0.1:6379 and mx6milter on its default socket with contrib/mx6milter.conf.
# Logs and pid files go to ./run/. Stop both with: scripts/run.sh stop
set -eu
cd "$(dirname "$0")/.."
RUN=$(pwd)/run
CONFIG=${MX6MILTER_CONFIG:-contrib/mx6milter.conf}
mkdir -p "$RUN"

stop() {
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
if [ -f "$RUN/mx6milter.pid" ] && kill -0 "$(cat "$RUN/mx6milter.pid")" 2>/dev/null; then
    echo "run.sh: mx6milter already running (pid $(cat "$RUN/mx6milter.pid"))"
else
    nohup .venv/bin/mx6milter -c "$CONFIG" >>"$RUN/mx6milter.log" 2>&1 &
    echo $! > "$RUN/mx6milter.pid"
    socket=$(sed -n 's/^socket *= *unix:\(.*\)$/\1/p' "$CONFIG")
    i=0
    while [ -n "$socket" ] && [ ! -S "$socket" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "run.sh: mx6milter did not start; see $RUN/mx6milter.log"; exit 1; }
        sleep 0.1
    done
    echo "run.sh: started mx6milter (pid $(cat "$RUN/mx6milter.pid")), config $CONFIG, log $RUN/mx6milter.log"
fi
cat <<MSG

mx6milter is listening on $(sed -n 's/^socket *= *//p' "$CONFIG").
Whitelist an IPv6 prefix:   .venv/bin/mx6ctl -c $CONFIG ip add 2001:db8:1::/48
Attach Postfix:             smtpd_milters = unix:/run/mx6milter/mx6milter.sock
                            milter_default_action = tempfail
Stop:                       scripts/run.sh stop
MSG
