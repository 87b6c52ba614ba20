#!/usr/bin/env bash
# scripts/prosody.sh start|stop|restart|status|env|packages -- a real Prosody (Debian prosody) for
# mailgate's tests, started by hand (no systemd, no init script) on a loopback high port.
#
#   start    render scripts/prosody/prosody.cfg.lua.in, register the test users and start Prosody
#            (idempotent: a running Prosody with the same config is left alone; one with another
#            config is restarted)
#   stop     TERM the daemon by the PID in its pidfile, KILL after a timeout (never by name)
#   status   exit 0 when running
#   env      print the MAILGATE_PROSODY_* variables the e2e tests read, as export lines (c2s
#            address, log file, and the CA of its self-signed certificate for example.com)
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# Users: alice@example.com / alice-secret, bob@example.com / bob-secret (VirtualHost example.com).
# Listener (127.0.0.1): c2s $MAILGATE_PROSODY_C2S_PORT (28222), STARTTLS offered but not
# required, SASL PLAIN allowed on the plain link. No PROXY protocol (Debian 12 has no
# mod_net_proxy). 28222 lies below the kernel's ephemeral port range (32768-60999), so no client
# socket of another program can hold it; should something listen there anyway, unless
# MAILGATE_PROSODY_C2S_PORT is set, the next ports 28232, 28242 are tried, and `env` prints the one
# in use (from $RUN/c2s.port).
# Runtime dir: $MAILGATE_PROSODY_RUN (default /tmp/mailgate-test/prosody), owned by prosody:
# config, data, log, pidfile, TLS key.
#
# Gotchas handled here: Prosody refuses to run as root, so it is started with setpriv as the
# prosody user and everything it touches (the TLS key included) belongs to prosody;
# `prosody --version` is not a version flag (it starts a server), so `prosodyctl about` is used;
# prosodyctl drops to the prosody user by itself; the daemon is started with stdio detached (a
# caller capturing this script's output would hang otherwise); a stopped daemon can stay a
# zombie for a while in this sandbox, so liveness is read from /proc/PID/stat, not kill -0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_PROSODY_RUN:-/tmp/mailgate-test/prosody}"
if [[ -n ${MAILGATE_PROSODY_C2S_PORT:-} ]]; then
  PORTS=("$MAILGATE_PROSODY_C2S_PORT")
else
  PORTS=(28222 28232 28242)
fi
CONF="$RUN/prosody.cfg.lua"
PIDF="$RUN/prosody.pid"
PORTF="$RUN/c2s.port"
USERS=("alice:alice-secret" "bob:bob-secret")
DOMAIN=example.com

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh" # log, die, readpid, alive, running, wait_port, ensure_cert, stop_daemon...


# render PORT: the config for a c2s port.
render() { sed -e "s#@RUN@#${RUN}#g" -e "s#@C2S_PORT@#$1#g" "$HERE/prosody/prosody.cfg.lua.in"; }

# port: the c2s port of the running (or last started) Prosody.
port() {
  local p
  p=$(tr -dc '0-9' <"$PORTF" 2>/dev/null || true)
  echo "${p:-${PORTS[0]}}"
}

# prosody_cert: the certificate for $DOMAIN, its modes set on every start.
prosody_cert() {
  ensure_cert "/CN=$DOMAIN" "DNS:$DOMAIN,DNS:localhost,IP:127.0.0.1"
  chmod 0644 "$RUN/tls/cert.pem"
  chmod 0600 "$RUN/tls/key.pem"
}

cmd_start() {
  command -v prosody >/dev/null 2>&1 && command -v prosodyctl >/dev/null 2>&1 ||
    die "prosody is not installed (apt-get install --no-install-recommends prosody; scripts/test.sh does it)"
  id prosody >/dev/null 2>&1 || die "system user prosody is missing (reinstall prosody)"
  command -v setpriv >/dev/null 2>&1 || die "setpriv (util-linux) is missing"
  mkdir -p "$RUN"
  if running; then
    local p
    p=$(port)
    if [[ -f $CONF ]] && [[ $(render "$p") == "$(cat "$CONF")" ]] && [[ " ${PORTS[*]} " == *" $p "* ]]; then
      log "already running (pid $(readpid "$PIDF")) on port $p, same config"
      return 0
    fi
    log "running with another config: restarting"
    cmd_stop
  fi
  chmod 0755 "$(dirname "$RUN")"
  prosody_cert
  # Fresh accounts on every start: data is test-only.
  rm -rf "${RUN:?}/data" "$PIDF"
  mkdir -p "$RUN/data"
  if [[ -s $RUN/prosody.log ]]; then mv -f "$RUN/prosody.log" "$RUN/prosody.log.1"; fi
  render "${PORTS[0]}" >"$CONF"
  chown -R prosody:prosody "$RUN"
  chmod 0755 "$RUN" # the tests read the log and the certificate; the key is 0600
  local about
  about=$(prosodyctl --config "$CONF" about </dev/null 2>/dev/null | awk '/^Prosody [0-9]/ {print; exit}') || true
  log "${about:-prosodyctl about printed no version}"
  local u
  for u in "${USERS[@]}"; do
    # prosodyctl drops to the prosody user itself; detached stdio (it never prompts here).
    prosodyctl --config "$CONF" register "${u%%:*}" "$DOMAIN" "${u#*:}" </dev/null >>"$RUN/launch.log" 2>&1 ||
      die_logs "prosodyctl register ${u%%:*}@$DOMAIN failed" "$RUN/launch.log"
  done
  # The ports are in the kernel's ephemeral range: a client socket of another program may hold
  # one, and Prosody then starts listening on nothing. Then the next port is tried.
  local p
  for p in "${PORTS[@]}"; do
    render "$p" >"$CONF"
    if launch "$p"; then
      echo "$p" >"$PORTF"
      return 0
    fi
    cmd_stop
    grep -q "port $p .* in use" "$RUN/prosody.log" 2>/dev/null || break
    log "127.0.0.1:$p is in use by another program"
  done
  die_logs "prosody did not start listening on 127.0.0.1 (tried ports ${PORTS[*]}; set MAILGATE_PROSODY_C2S_PORT to choose one)" \
    "$RUN/launch.log" "$RUN/prosody.log"
}

# launch PORT starts the daemon and waits until it listens on PORT. On failure the daemon may
# still run: the caller stops it (by its pidfile, which launch waits for).
launch() {
  local p=$1 i
  rm -f "$PIDF" "$PORTF"
  : >"$RUN/prosody.log"
  chown prosody:prosody "$RUN/prosody.log"
  # -D: daemonize (the pidfile names the daemon). Detached stdio.
  setpriv --reuid=prosody --regid=prosody --init-groups /usr/bin/prosody -D --config "$CONF" \
    </dev/null >>"$RUN/launch.log" 2>&1 || return 1
  for ((i = 0; i < 100; i++)); do
    running && break
    sleep 0.1
  done
  running || return 1
  grep -q "Activated service 'c2s' on no ports" "$RUN/prosody.log" && return 1
  wait_port "$p" 10 || return 1
  log "up (pid $(readpid "$PIDF")): c2s 127.0.0.1:$p (STARTTLS optional, PLAIN allowed); log $RUN/prosody.log"
}

cmd_stop() { stop_daemon prosody nokids; }

cmd_env() {
  cat <<ENV
export MAILGATE_PROSODY_C2S=127.0.0.1:$(port)
export MAILGATE_PROSODY_LOG=$RUN/prosody.log
export MAILGATE_PROSODY_CA=$RUN/tls/cert.pem
ENV
}

dispatch "prosody" "$@"
