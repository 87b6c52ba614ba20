#!/usr/bin/env bash
# scripts/apache.sh start|stop|restart|status|env|packages -- a real Apache httpd with mod_dav (Debian
# apache2) for mailgate's WebDAV e2e test (litmus direct and through mailgate), started by hand (no
# systemd, no apache2ctl, no file under /etc/apache2 touched) on a loopback port.
#
#   start    render the config below into $RUN/httpd.conf, write the htpasswd file and start httpd
#            (idempotent: a running httpd with the same config is left alone)
#   stop     TERM the parent by the PID in its pidfile, KILL it and its workers after a timeout
#            (never by name)
#   status   exit 0 when running
#   env      print MAILGATE_APACHE_URL (the DAV collection) and MAILGATE_APACHE_RUN as export lines
#   packages print the Debian packages it needs (scripts/test.sh installs the missing ones)
#
# DAV: http://127.0.0.1:$PORT/dav/ is a mod_dav_fs collection ($RUN/dav, emptied on every start)
# with a lock database ($RUN/lock/DAVLock), Basic auth (htpasswd, bcrypt) for
# alice@example.com / secret and bob@example.com / bob-secret. Port: $MAILGATE_APACHE_PORT
# (default 28380: below the kernel's ephemeral range 32768-60999, so no client socket of another
# program can be holding it). Runtime dir: $MAILGATE_APACHE_RUN (default /tmp/mailgate-test/apache):
# httpd.conf, users, dav, lock, error.log, access.log, httpd.pid.
#
# Gotchas handled here: Debian's apache2 binary reads nothing from /etc/apache2 when given -f and
# -d, so every module is loaded here by path; run as root it must drop to a user (www-data), who
# then owns the DAV tree and the lock directory; it daemonizes and writes its own pidfile, but a
# stopped process can stay a zombie for a moment in this sandbox, so liveness is read from
# /proc/PID/stat, not from kill -0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${MAILGATE_APACHE_RUN:-/tmp/mailgate-test/apache}"
PORT="${MAILGATE_APACHE_PORT:-28380}"
CONF="$RUN/httpd.conf"
PIDF="$RUN/httpd.pid"
BIN=/usr/sbin/apache2
MODS=/usr/lib/apache2/modules

# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh" # log, die, readpid, alive, running, wait_port, already_up, stop_daemon...

# The account the workers run as when started by root (an unprivileged caller keeps its own).
RUN_USER=www-data

render() {
  local user=""
  if ((EUID == 0)); then user="User $RUN_USER
Group $RUN_USER"; fi
  cat <<CONF
# Rendered by scripts/apache.sh; edits are lost on the next start.
ServerRoot "$RUN"
DefaultRuntimeDir "$RUN/runtime"
PidFile "$PIDF"
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
$user
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule authn_core_module $MODS/mod_authn_core.so
LoadModule authn_file_module $MODS/mod_authn_file.so
LoadModule authz_user_module $MODS/mod_authz_user.so
LoadModule auth_basic_module $MODS/mod_auth_basic.so
LoadModule alias_module $MODS/mod_alias.so
LoadModule mime_module $MODS/mod_mime.so
LoadModule dav_module $MODS/mod_dav.so
LoadModule dav_fs_module $MODS/mod_dav_fs.so
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
Timeout 60
KeepAlive On
ErrorLog "$RUN/error.log"
LogLevel warn
LogFormat "%h %u \"%r\" %>s %b" dav
CustomLog "$RUN/access.log" dav
TypesConfig /etc/mime.types
DocumentRoot "$RUN/empty"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
DAVLockDB "$RUN/lock/DAVLock"
Alias /dav "$RUN/dav"
<Directory "$RUN/dav">
    DAV On
    Options None
    AllowOverride None
    AuthType Basic
    AuthName "mailgate e2e"
    AuthBasicProvider file
    AuthUserFile "$RUN/users"
    Require valid-user
</Directory>
CONF
}

cmd_start() {
  [[ -x $BIN ]] || die "$BIN is missing (apt-get install apache2; scripts/test.sh does it)"
  command -v htpasswd >/dev/null 2>&1 || die "htpasswd is missing (apt-get install apache2-utils)"
  local m
  for m in mpm_event authz_core authn_core authn_file authz_user auth_basic alias mime dav dav_fs; do
    [[ -f $MODS/mod_$m.so ]] || die "$MODS/mod_$m.so is missing (reinstall apache2)"
  done
  mkdir -p "$RUN"
  local new
  new=$(render)
  if already_up "$new" "$CONF"; then return 0; fi
  rm -rf "${RUN:?}/dav" "${RUN:?}/lock" "${RUN:?}/runtime" # a fresh store and lock db on every start
  mkdir -p "$RUN/dav" "$RUN/lock" "$RUN/runtime" "$RUN/empty"
  printf '%s\n' "$new" >"$CONF"
  : >"$RUN/users"
  htpasswd -b -B "$RUN/users" alice@example.com secret 2>/dev/null || die "htpasswd failed"
  htpasswd -b -B "$RUN/users" bob@example.com bob-secret 2>/dev/null || die "htpasswd failed"
  if ((EUID == 0)); then
    id "$RUN_USER" >/dev/null 2>&1 || die "user $RUN_USER is missing"
    # The workers read the users and write the tree and the lock db; every dir on the way to
    # them must be traversable.
    chmod 0755 "$RUN" "$(dirname "$RUN")"
    chown -R "$RUN_USER:$RUN_USER" "$RUN/dav" "$RUN/lock"
    chown "root:$RUN_USER" "$RUN/users"
    chmod 0640 "$RUN/users"
  else
    chmod 0600 "$RUN/users"
  fi
  local f
  for f in error.log access.log; do
    if [[ -s $RUN/$f ]]; then mv -f "$RUN/$f" "$RUN/$f.1"; fi
  done
  rm -f "$PIDF"
  "$BIN" -t -d "$RUN" -f "$CONF" >"$RUN/launch.log" 2>&1 || die_logs "$BIN -t -f $CONF: the config does not load" "$RUN/launch.log"
  # httpd forks, the parent exits and the daemon writes PidFile; stdio is detached so that a
  # caller capturing this script's output does not hang on it.
  "$BIN" -d "$RUN" -f "$CONF" -k start </dev/null >>"$RUN/launch.log" 2>&1 || die_logs "$BIN -k start failed" "$RUN/launch.log" "$RUN/error.log"
  if ! wait_port "$PORT" 20; then
    cmd_stop
    die_logs "port 127.0.0.1:$PORT did not open" "$RUN/launch.log" "$RUN/error.log"
  fi
  local i
  for ((i = 0; i < 50; i++)); do running && break; sleep 0.1; done
  running || die_logs "no live httpd PID in $PIDF" "$RUN/error.log"
  log "up (pid $(readpid "$PIDF")): http://127.0.0.1:$PORT/dav/; logs $RUN/error.log, $RUN/access.log"
}

cmd_stop() { stop_daemon apache2 kids; }

cmd_env() {
  cat <<ENV
export MAILGATE_APACHE_URL=http://127.0.0.1:$PORT/dav/
export MAILGATE_APACHE_RUN=$RUN
ENV
}

dispatch "apache2 apache2-utils litmus" "$@"
