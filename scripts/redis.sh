#!/usr/bin/env bash
# scripts/redis.sh start|stop|restart|status|env|packages -- a real redis-server (Debian
# redis-server) for mailgate's cluster tests, started by hand (no systemd) on a loopback port.
#
#   start    write $RUN/redis.conf and start redis-server (idempotent: a running one with the
#            same config is left alone)
#   stop     SHUTDOWN through TERM by the PID in its pidfile, KILL after a timeout
#   status   exit 0 when running
#   env      print MAILGATE_REDIS (host:port) and MAILGATE_REDIS_SERVER (the binary, for tests
#            that start and stop a private Redis of their own) as export lines
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# Port: $MAILGATE_REDIS_PORT (default 28379: below the kernel's ephemeral range). Persistence
# as in production: appendonly yes with fsync every second (a restarted Redis keeps the
# cluster's policy). Runtime dir: $MAILGATE_REDIS_RUN (default /tmp/mailgate-test/redis).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_REDIS_RUN:-/tmp/mailgate-test/redis}"
PORT="${MAILGATE_REDIS_PORT:-28379}"
CONF="$RUN/redis.conf"
PIDF="$RUN/redis.pid"
BIN=/usr/bin/redis-server

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh"

render() {
  cat <<CONF
bind 127.0.0.1
port $PORT
protected-mode yes
daemonize yes
pidfile $PIDF
logfile $RUN/redis.log
dir $RUN/data
appendonly yes
appendfsync everysec
save ""
CONF
}

cmd_start() {
  [[ -x $BIN ]] || die "$BIN is missing (apt-get install redis-server; scripts/test.sh does it)"
  mkdir -p "$RUN/data"
  local new
  new=$(render)
  if already_up "$new" "$CONF"; then return 0; fi
  printf '%s\n' "$new" >"$CONF"
  "$BIN" "$CONF" </dev/null >>"$RUN/launch.log" 2>&1 || die_logs "redis-server $CONF failed" "$RUN/launch.log" "$RUN/redis.log"
  wait_port "$PORT" 20 || die_logs "port 127.0.0.1:$PORT did not open" "$RUN/redis.log"
  for _ in $(seq 50); do running && break; sleep 0.1; done
  running || die "no live redis-server PID in $PIDF"
  log "up (pid $(readpid "$PIDF")): 127.0.0.1:$PORT; log $RUN/redis.log"
}

cmd_stop() { stop_daemon redis-server nokids; }

cmd_env() {
  cat <<ENV
export MAILGATE_REDIS=127.0.0.1:$PORT
export MAILGATE_REDIS_SERVER=$BIN
ENV
}

dispatch "redis-server" "$@"
