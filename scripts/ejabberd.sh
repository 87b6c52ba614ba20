#!/usr/bin/env bash
# scripts/ejabberd.sh start|stop|restart|status|env|packages -- a real ejabberd (Debian ejabberd)
# for mailgate's XMPP e2e tests, started by hand (no systemd, no init script) on loopback ports.
#
#   start    render scripts/ejabberd/*.in, start ejabberd, wait until the node answers and
#            register the test users (idempotent: a running ejabberd with the same config is left
#            alone)
#   stop     `ejabberdctl stop`, then TERM/KILL by the PID in its pidfile (never by name)
#   status   exit 0 when running
#   env      print the MAILGATE_EJABBERD_* variables the e2e tests read, as export lines
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# Users: alice@example.com / alice-secret, bob@example.com / bob-secret (host example.com).
# Listeners (127.0.0.1): c2s $MAILGATE_EJABBERD_C2S_PORT (28422; STARTTLS optional, PLAIN allowed
# on the plain link) and c2s behind the PROXY protocol $MAILGATE_EJABBERD_PROXY_PORT (28423); the
# Erlang distribution on 127.0.0.1:28499 (ejabberdctl talks to the node through it; no epmd).
# The ports lie below the kernel's ephemeral range (32768-60999).
# Runtime dir: $MAILGATE_EJABBERD_RUN (default /tmp/mailgate-test/ejabberd), owned by ejabberd:
# configs, Mnesia spool, logs, pidfile, certificate.
#
# Gotchas handled here: ejabberdctl switches to the ejabberd user itself when run as root, and
# everything the node touches must belong to that user; the node's certfile wants key and
# certificate in one PEM; `ejabberdctl start` returns before the node is up, `started` waits for
# it; the listener backlog defaults to 5, too small for the load tests, hence 1024 in the config.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_EJABBERD_RUN:-/tmp/mailgate-test/ejabberd}"
C2S_PORT="${MAILGATE_EJABBERD_C2S_PORT:-28422}"
PROXY_PORT="${MAILGATE_EJABBERD_PROXY_PORT:-28423}"
DIST_PORT="${MAILGATE_EJABBERD_DIST_PORT:-28499}"
PIDF="$RUN/ejabberd.pid"
USERS=("alice:alice-secret" "bob:bob-secret")
DOMAIN=example.com

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh" # log, die, readpid, alive, running, wait_port, already_up, stop_daemon...

render() {
  sed -e "s#@RUN@#${RUN}#g" -e "s#@C2S_PORT@#${C2S_PORT}#g" -e "s#@PROXY_PORT@#${PROXY_PORT}#g" \
    -e "s#@DIST_PORT@#${DIST_PORT}#g" "$HERE/ejabberd/$1.in"
}

ctl() {
  ejabberdctl --config-dir "$RUN" --ctl-config "$RUN/ejabberdctl.cfg" --config "$RUN/ejabberd.yml" \
    --spool "$RUN/db" --logs "$RUN/log" "$@" </dev/null
}

cmd_start() {
  command -v ejabberdctl >/dev/null 2>&1 || die "ejabberd is not installed (apt-get install --no-install-recommends ejabberd; scripts/test.sh does it)"
  id ejabberd >/dev/null 2>&1 || die "system user ejabberd is missing (reinstall ejabberd)"
  mkdir -p "$RUN"
  local yml ctlcfg
  yml=$(render ejabberd.yml)
  ctlcfg=$(render ejabberdctl.cfg)
  if already_up "$yml" "$RUN/ejabberd.yml" "$ctlcfg" "$RUN/ejabberdctl.cfg"; then return 0; fi
  chmod 0755 "$(dirname "$RUN")"
  ensure_cert "/CN=$DOMAIN" "DNS:$DOMAIN,DNS:localhost,IP:127.0.0.1"
  cat "$RUN/tls/key.pem" "$RUN/tls/cert.pem" >"$RUN/tls/combined.pem"
  chmod 0600 "$RUN/tls/combined.pem"
  rm -rf "${RUN:?}/db" "$PIDF" # fresh accounts on every start: data is test-only
  mkdir -p "$RUN/db" "$RUN/log"
  printf '%s\n' "$yml" >"$RUN/ejabberd.yml"
  printf '%s\n' "$ctlcfg" >"$RUN/ejabberdctl.cfg"
  cp /etc/ejabberd/inetrc "$RUN/inetrc" 2>/dev/null || true
  chown -R ejabberd:ejabberd "$RUN"
  chmod 0755 "$RUN" "$RUN/log" # the tests read the log
  ctl start >>"$RUN/launch.log" 2>&1 || die_logs "ejabberdctl start failed" "$RUN/launch.log"
  ctl started >>"$RUN/launch.log" 2>&1 || die_logs "the ejabberd node did not come up" "$RUN/launch.log" "$RUN/log/ejabberd.log"
  local u
  for u in "${USERS[@]}"; do
    ctl register "${u%%:*}" "$DOMAIN" "${u#*:}" >>"$RUN/launch.log" 2>&1 ||
      die_logs "ejabberdctl register ${u%%:*}@$DOMAIN failed" "$RUN/launch.log"
  done
  local p i
  for p in "$C2S_PORT" "$PROXY_PORT"; do
    wait_port "$p" 30 || die_logs "port 127.0.0.1:$p did not open" "$RUN/log/ejabberd.log"
  done
  for ((i = 0; i < 50; i++)); do
    running && break
    sleep 0.1
  done
  running || die "no live ejabberd PID in $PIDF"
  chmod 0644 "$RUN/log/ejabberd.log" 2>/dev/null || true
  log "up (pid $(readpid "$PIDF")): c2s 127.0.0.1:$C2S_PORT, c2s+PROXY 127.0.0.1:$PROXY_PORT; log $RUN/log/ejabberd.log"
}

# ejabberd_term PID: ask the node to stop through ejabberdctl; stop_daemon KILLs it after 10 s.
ejabberd_term() { ctl stop >>"$RUN/launch.log" 2>&1 || kill -TERM "$1" 2>/dev/null || true; }

cmd_stop() { stop_daemon ejabberd kids ejabberd_term; }

cmd_env() {
  cat <<ENV
export MAILGATE_EJABBERD_C2S=127.0.0.1:$C2S_PORT
export MAILGATE_EJABBERD_PROXY=127.0.0.1:$PROXY_PORT
export MAILGATE_EJABBERD_LOG=$RUN/log/ejabberd.log
ENV
}

dispatch "ejabberd" "$@"
