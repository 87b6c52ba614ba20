#!/usr/bin/env bash
# scripts/postfix.sh start|stop|restart|status|env|packages -- a real Postfix (Debian postfix) for
# mailgate's SMTP tests, started by hand (no systemd, no init script) on loopback high ports.
#
#   start    render scripts/postfix/{main,master}.cf.in and start Postfix (idempotent: a running
#            Postfix with the same config is left alone; one with another config is restarted)
#   stop     "postfix -c DIR stop", then KILL by the PID in the pidfile after a timeout (never by name)
#   status   exit 0 when running
#   env      print the MAILGATE_POSTFIX_* variables the e2e tests read, as export lines
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# Needs Dovecot (scripts/dovecot.sh start, which scripts/test.sh runs first): SASL AUTH goes to its
# auth listener ($MAILGATE_DOVECOT_AUTH_PORT, 31030) and mail for example.com to its LMTP listener
# ($MAILGATE_DOVECOT_LMTP_PORT, 31024), so it lands in
# $MAILGATE_DOVECOT_RUN/mail/example.com/<user>/Maildir. Users: alice@example.com / alice-secret,
# bob@example.com / bob-secret (Dovecot's). Every other domain is discarded.
# Listeners (127.0.0.1 only):
#   $MAILGATE_POSTFIX_SUBMISSION_PROXY_PORT (32588)   submission, AUTH, expects a PROXY v1/v2 header
#   $MAILGATE_POSTFIX_SUBMISSION_XCLIENT_PORT (32589) submission, AUTH, XCLIENT from 127.0.0.1 only
#   $MAILGATE_POSTFIX_MX_PORT (32525)                 MX: no AUTH, example.com only, expects PROXY
# STARTTLS is offered everywhere and never required; AUTH works without it (mailgate talks plain to
# its backend). Runtime dir: $MAILGATE_POSTFIX_RUN (default /tmp/mailgate-test/postfix): conf/,
# queue/, data/, tls/, postfix.log (maillog_file, via postlogd).
#
# Gotchas handled here: Debian's postinst writes no main.cf when preseeded with "No configuration"
# (scripts/test.sh does), so every postfix/postconf call takes -c; maillog_file must be under
# maillog_file_prefixes or "postfix check" fails silently; the queue's subdirectories and their owners
# come from "postfix set-permissions"; the master pads its pidfile with spaces; a stopped daemon can
# stay a zombie for ~2 s here, so liveness is read from /proc/PID/stat; the daemon is started with
# stdio detached so a caller capturing this script's output does not hang.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_POSTFIX_RUN:-/tmp/mailgate-test/postfix}"
SUB_PROXY_PORT="${MAILGATE_POSTFIX_SUBMISSION_PROXY_PORT:-32588}"
SUB_XCLIENT_PORT="${MAILGATE_POSTFIX_SUBMISSION_XCLIENT_PORT:-32589}"
MX_PORT="${MAILGATE_POSTFIX_MX_PORT:-32525}"
LMTP_PORT="${MAILGATE_DOVECOT_LMTP_PORT:-31024}"
AUTH_PORT="${MAILGATE_DOVECOT_AUTH_PORT:-31030}"
DOVECOT_RUN="${MAILGATE_DOVECOT_RUN:-/tmp/mailgate-test/dovecot}"
CONF="$RUN/conf"
PIDF="$RUN/queue/pid/master.pid"

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh" # log, die, readpid, alive, running, wait_port, ensure_cert, stop_daemon...


render() {
  sed -e "s#@RUN@#${RUN}#g" -e "s#@LMTP_PORT@#${LMTP_PORT}#g" -e "s#@AUTH_PORT@#${AUTH_PORT}#g" \
    -e "s#@SUB_PROXY_PORT@#${SUB_PROXY_PORT}#g" -e "s#@SUB_XCLIENT_PORT@#${SUB_XCLIENT_PORT}#g" \
    -e "s#@MX_PORT@#${MX_PORT}#g" "$1"
}

cmd_start() {
  command -v postfix >/dev/null 2>&1 || die "postfix is not installed (apt-get install postfix swaks libnet-ssleay-perl; scripts/test.sh does it)"
  id postfix >/dev/null 2>&1 || die "system user postfix is missing (reinstall postfix)"
  local p
  for p in "$AUTH_PORT" "$LMTP_PORT"; do
    port_open "$p" || die "Dovecot is not listening on 127.0.0.1:$p (SASL auth / LMTP): run scripts/dovecot.sh start first"
  done
  local main master
  main=$(render "$HERE/postfix/main.cf.in")
  master=$(render "$HERE/postfix/master.cf.in")
  if already_up "$main" "$CONF/main.cf" "$master" "$CONF/master.cf"; then return 0; fi
  mkdir -p "$RUN" "$CONF" "$RUN/queue" "$RUN/data"
  chmod 0755 "$RUN" "$(dirname "$RUN")" "$CONF" "$RUN/queue"
  chown postfix "$RUN/data"
  ensure_cert "/CN=localhost" "DNS:localhost,DNS:example.com,DNS:mail.example.com,IP:127.0.0.1"
  printf '%s\n' "$main" >"$CONF/main.cf"
  printf '%s\n' "$master" >"$CONF/master.cf"
  rm -f "$PIDF"
  if [[ -s $RUN/postfix.log ]]; then mv -f "$RUN/postfix.log" "$RUN/postfix.log.1"; fi
  # The queue's subdirectories with their owners (most of the start time).
  postfix -c "$CONF" set-permissions </dev/null >>"$RUN/launch.log" 2>&1 || true
  postfix -c "$CONF" check </dev/null >>"$RUN/launch.log" 2>&1 || die_logs "postfix -c $CONF check failed" "$RUN/launch.log"
  local logs=("$RUN/launch.log" "$RUN/postfix.log")
  postfix -c "$CONF" start </dev/null >>"$RUN/launch.log" 2>&1 || die_logs "postfix -c $CONF start failed" "${logs[@]}"
  for p in "$SUB_PROXY_PORT" "$SUB_XCLIENT_PORT" "$MX_PORT"; do
    wait_port "$p" 20 || die_logs "port 127.0.0.1:$p did not open" "${logs[@]}"
  done
  local i
  for ((i = 0; i < 50; i++)); do running && break; sleep 0.1; done
  running || die "no live master PID in $PIDF"
  log "up (pid $(readpid "$PIDF")): submission+PROXY 127.0.0.1:$SUB_PROXY_PORT, submission+XCLIENT :$SUB_XCLIENT_PORT, mx+PROXY :$MX_PORT; log $RUN/postfix.log"
}

# term_postfix PID: "postfix stop", or TERM when that fails.
term_postfix() { postfix -c "$CONF" stop </dev/null >>"$RUN/launch.log" 2>&1 || kill -TERM "$1" 2>/dev/null || true; }

cmd_stop() { stop_daemon master kids term_postfix; }

cmd_env() {
  cat <<EOF
export MAILGATE_POSTFIX_SUBMISSION_PROXY=127.0.0.1:$SUB_PROXY_PORT
export MAILGATE_POSTFIX_SUBMISSION_XCLIENT=127.0.0.1:$SUB_XCLIENT_PORT
export MAILGATE_POSTFIX_MX=127.0.0.1:$MX_PORT
export MAILGATE_POSTFIX_LOG=$RUN/postfix.log
export MAILGATE_POSTFIX_CONF=$CONF
export MAILGATE_POSTFIX_MAILDIRS=$DOVECOT_RUN/mail
EOF
}

dispatch "postfix swaks libnet-ssleay-perl" "$@"
