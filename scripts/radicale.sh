#!/usr/bin/env bash
# scripts/radicale.sh start|stop|restart|status|env|packages -- a real Radicale (Debian radicale) for
# mailgate's e2e tests of WebDAV/CalDAV/CardDAV, started by hand (no systemd) on a loopback port.
#
#   start    render scripts/radicale/config.in, write the htpasswd file and start Radicale
#            (idempotent: a running Radicale with the same config is left alone)
#   stop     TERM Radicale by the PID in its pidfile, KILL after a timeout (never by name)
#   status   exit 0 when running
#   env      print MAILGATE_RADICALE (host:port) and MAILGATE_RADICALE_RUN as export lines
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# Users (htpasswd, apr1-md5 made by htpasswd from apache2-utils): alice@example.com / alice-secret,
# bob@example.com / bob-secret. Port: $MAILGATE_RADICALE_PORT (default 28332: below the kernel's
# ephemeral range 32768-60999, so no client socket of another program can be holding it).
# Runtime dir: $MAILGATE_RADICALE_RUN (default /tmp/mailgate-test/radicale): config, users,
# collections, radicale.log, radicale.pid.
#
# Gotchas handled here: python3 on PATH may be a pyenv interpreter without Debian's modules, so
# /usr/bin/radicale (whose shebang is /usr/bin/python3) is started by path; Radicale does not
# daemonize, so it runs under setsid with stdio detached (a caller capturing this script's output
# would otherwise hang) and its PID is taken from $!; a stopped process can stay a zombie for a
# moment in this sandbox, so liveness is read from /proc/PID/stat, not from kill -0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_RADICALE_RUN:-/tmp/mailgate-test/radicale}"
PORT="${MAILGATE_RADICALE_PORT:-28332}"
CONF="$RUN/config"
PIDF="$RUN/radicale.pid"
BIN=/usr/bin/radicale

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh" # log, die, readpid, alive, running, wait_port, already_up, stop_daemon...

render() { sed -e "s#@RUN@#${RUN}#g" -e "s#@PORT@#${PORT}#g" "$HERE/radicale/config.in"; }

cmd_start() {
  [[ -x $BIN ]] || die "$BIN is missing (apt-get install radicale; scripts/test.sh does it)"
  command -v htpasswd >/dev/null 2>&1 || die "htpasswd is missing (apt-get install apache2-utils)"
  mkdir -p "$RUN/collections"
  local new
  new=$(render)
  if already_up "$new" "$CONF"; then return 0; fi
  rm -rf "${RUN:?}/collections" && mkdir -p "$RUN/collections" # a fresh store on every start
  printf '%s\n' "$new" >"$CONF"
  : >"$RUN/users"
  htpasswd -b -m "$RUN/users" alice@example.com alice-secret 2>/dev/null || die "htpasswd failed"
  htpasswd -b -m "$RUN/users" bob@example.com bob-secret 2>/dev/null || die "htpasswd failed"
  chmod 0600 "$RUN/users"
  if [[ -s $RUN/radicale.log ]]; then mv -f "$RUN/radicale.log" "$RUN/radicale.log.1"; fi
  setsid "$BIN" --config "$CONF" </dev/null >>"$RUN/radicale.log" 2>&1 &
  echo $! >"$PIDF"
  if ! wait_port "$PORT" 20; then
    tail -n 20 "$RUN/radicale.log" >&2 || true
    cmd_stop
    die "port 127.0.0.1:$PORT did not open"
  fi
  running || die "no live Radicale PID in $PIDF"
  log "up (pid $(readpid "$PIDF")): 127.0.0.1:$PORT; log $RUN/radicale.log"
}

cmd_stop() { stop_daemon radicale nokids; }

cmd_env() {
  cat <<ENV
export MAILGATE_RADICALE=127.0.0.1:$PORT
export MAILGATE_RADICALE_RUN=$RUN
ENV
}

dispatch "radicale apache2-utils" "$@"
