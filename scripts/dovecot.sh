#!/usr/bin/env bash
# scripts/dovecot.sh start|stop|restart|status|env|packages -- a real Dovecot (Debian dovecot-imapd) for
# mailgate's tests, started by hand (no systemd, no init script) on loopback high ports.
#
#   start    render scripts/dovecot/dovecot.conf.in and start Dovecot (idempotent: a running
#            Dovecot with the same config is left alone; one with another config is restarted)
#   stop     TERM the master by the PID in its pidfile, KILL after a timeout (never by name)
#   status   exit 0 when running
#   env      print the MAILGATE_DOVECOT_* variables the e2e tests read, as export lines
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# Users (passwd-file): alice@example.com / alice-secret, bob@example.com / bob-secret.
# Listeners (127.0.0.1): plain IMAP (STARTTLS offered) $MAILGATE_DOVECOT_IMAP_PORT (31143),
# implicit TLS $MAILGATE_DOVECOT_IMAPS_PORT (31993), PROXY v1/v2 (haproxy = yes, trusted
# 127.0.0.0/8) $MAILGATE_DOVECOT_PROXY_PORT (31144). IMAP ID x-originating-ip is honoured from
# 127.0.0.0/8 (login_trusted_networks). auth_failure_delay = 0.
# Runtime dir: $MAILGATE_DOVECOT_RUN (default /tmp/mailgate-test/dovecot): config, log, pidfile, TLS.
# Admin: doveadm -c "$MAILGATE_DOVECOT_RUN/dovecot.conf" who
#
# Gotchas handled here: Dovecot's master keeps the caller's stderr open for its whole life, so
# it is started with stdio detached (a caller capturing this script's output would hang
# otherwise); a stopped daemon can stay a zombie for ~2 s in this sandbox, so liveness is read
# from /proc/PID/stat, not from kill -0; login/auth processes run as dovenull/dovecot, so the
# runtime dir is 0755.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_DOVECOT_RUN:-/tmp/mailgate-test/dovecot}"
IMAP_PORT="${MAILGATE_DOVECOT_IMAP_PORT:-31143}"
IMAPS_PORT="${MAILGATE_DOVECOT_IMAPS_PORT:-31993}"
PROXY_PORT="${MAILGATE_DOVECOT_PROXY_PORT:-31144}"
POP3_PORT="${MAILGATE_DOVECOT_POP3_PORT:-31110}"
POP3S_PORT="${MAILGATE_DOVECOT_POP3S_PORT:-31995}"
POP3_PROXY_PORT="${MAILGATE_DOVECOT_POP3_PROXY_PORT:-31111}"
LMTP_PORT="${MAILGATE_DOVECOT_LMTP_PORT:-31024}"
AUTH_PORT="${MAILGATE_DOVECOT_AUTH_PORT:-31030}"
CONF="$RUN/dovecot.conf"
PIDF="$RUN/base/master.pid"

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh" # log, die, readpid, alive, running, wait_port, ensure_cert, stop_daemon...


render() {
  sed -e "s#@RUN@#${RUN}#g" -e "s#@IMAP_PORT@#${IMAP_PORT}#g" \
    -e "s#@IMAPS_PORT@#${IMAPS_PORT}#g" -e "s#@PROXY_PORT@#${PROXY_PORT}#g" \
    -e "s#@POP3_PORT@#${POP3_PORT}#g" -e "s#@POP3S_PORT@#${POP3S_PORT}#g" \
    -e "s#@POP3_PROXY_PORT@#${POP3_PROXY_PORT}#g" -e "s#@LMTP_PORT@#${LMTP_PORT}#g" -e "s#@AUTH_PORT@#${AUTH_PORT}#g" \
    "$HERE/dovecot/dovecot.conf.in"
}

cmd_start() {
  command -v dovecot >/dev/null 2>&1 || die "dovecot is not installed (apt-get install dovecot-imapd; scripts/test.sh does it)"
  mkdir -p "$RUN"/{base,state,mail}
  local new
  new=$(render)
  if already_up "$new" "$CONF"; then return 0; fi
  ensure_user vmail
  for u in dovecot dovenull; do id "$u" >/dev/null 2>&1 || die "system user $u is missing (reinstall dovecot-core)"; done
  # Login and auth processes run as dovenull/dovecot: every dir on the way must be traversable.
  chmod 0755 "$RUN" "$(dirname "$RUN")"
  chown vmail:vmail "$RUN/mail"
  ensure_cert "/CN=localhost" "DNS:localhost,DNS:example.com,DNS:mail.example.com,IP:127.0.0.1"
  printf '%s\n' 'alice@example.com:{PLAIN}alice-secret' 'bob@example.com:{PLAIN}bob-secret' >"$RUN/users"
  chmod 0644 "$RUN/users"
  printf '%s\n' "$new" >"$CONF"
  if [[ -s $RUN/dovecot.log ]]; then mv -f "$RUN/dovecot.log" "$RUN/dovecot.log.1"; fi
  # Sockets and the pidfile of an earlier run: a stale socket (e.g. anvil-auth-penalty, disabled
  # here) would be connected to and refused, which costs every first login 5 s.
  rm -rf "${RUN:?}/base"
  mkdir -p "$RUN/base"
  # Detached stdio: Dovecot's master keeps stderr open for its whole life.
  local logs=("$RUN/launch.log" "$RUN/dovecot.log")
  dovecot -c "$CONF" </dev/null >>"$RUN/launch.log" 2>&1 || die_logs "dovecot -c $CONF failed" "${logs[@]}"
  local p
  for p in "$IMAP_PORT" "$IMAPS_PORT" "$PROXY_PORT" "$POP3_PORT" "$POP3S_PORT" "$POP3_PROXY_PORT" "$LMTP_PORT" "$AUTH_PORT"; do
    wait_port "$p" 20 || die_logs "port 127.0.0.1:$p did not open" "${logs[@]}"
  done
  running || die "no live master PID in $PIDF"
  doveadm -c "$CONF" who </dev/null >/dev/null 2>&1 || die "doveadm -c $CONF who failed"
  log "up (pid $(readpid "$PIDF")): imap 127.0.0.1:$IMAP_PORT, imaps :$IMAPS_PORT, proxy :$PROXY_PORT; log $RUN/dovecot.log"
}

cmd_stop() { stop_daemon master kids; }

cmd_env() {
  cat <<EOF
export MAILGATE_DOVECOT_IMAP=127.0.0.1:$IMAP_PORT
export MAILGATE_DOVECOT_IMAPS=127.0.0.1:$IMAPS_PORT
export MAILGATE_DOVECOT_PROXY=127.0.0.1:$PROXY_PORT
export MAILGATE_DOVECOT_CONF=$CONF
export MAILGATE_DOVECOT_CA=$RUN/tls/cert.pem
export MAILGATE_DOVECOT_POP3=127.0.0.1:$POP3_PORT
export MAILGATE_DOVECOT_POP3S=127.0.0.1:$POP3S_PORT
export MAILGATE_DOVECOT_POP3_PROXY=127.0.0.1:$POP3_PROXY_PORT
export MAILGATE_DOVECOT_LMTP=127.0.0.1:$LMTP_PORT
export MAILGATE_DOVECOT_AUTH=127.0.0.1:$AUTH_PORT
EOF
}

dispatch "dovecot-imapd dovecot-pop3d dovecot-lmtpd" "$@"
