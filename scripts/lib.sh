# scripts/lib.sh -- helpers shared by scripts/dovecot.sh, postfix.sh, prosody.sh and radicale.sh,
# which source it right after setting HERE, RUN and PIDF (bash; safe under set -euo pipefail). It
# defines functions only, and LIB_TAG, the name log lines carry (the sourcing script's file name).
# A script defines cmd_start, cmd_stop and cmd_env and ends with `dispatch PACKAGES "$@"`.
#
# Daemons are found and stopped by the PID in their pidfile, never by name. A stopped daemon can
# stay a zombie for ~2 s in this sandbox, so liveness is read from /proc/PID/stat, not kill -0.

LIB_TAG="$(basename "${BASH_SOURCE[1]:-$0}")"

log() { echo "[$LIB_TAG $(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }
# die_logs MESSAGE FILE...: show the last 20 lines of the FILEs (logs), then die with MESSAGE.
die_logs() {
  local msg=$1
  shift
  tail -n 20 "$@" >&2 2>/dev/null || true
  die "$msg"
}

# readpid FILE: the first number in FILE (master pidfiles may be padded with spaces).
readpid() { [[ -s $1 ]] && head -n1 "$1" | tr -dc '0-9'; }
# alive PID: the process exists and is not a zombie.
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ -n $st && $st != Z ]]; }
# running: the daemon named by $PIDF is alive.
running() { local pid; pid=$(readpid "$PIDF" 2>/dev/null) && [[ -n $pid ]] && alive "$pid"; }

# port_open PORT: a TCP connect to 127.0.0.1:PORT works (pure bash).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT [SECONDS]: wait (default 20 s) until port_open PORT.
wait_port() {
  local port=$1 t=${2:-20} i
  for ((i = 0; i < t * 10; i++)); do
    if port_open "$port"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# already_up NEW FILE [NEW FILE...]: true when the daemon in $PIDF runs with the configs it would
# be started with, i.e. each rendered NEW equals the content of its FILE. A daemon running with
# another config is stopped (cmd_stop), so that the caller starts it afresh.
already_up() {
  running || return 1
  local same=1
  while (($# >= 2)); do
    [[ -f $2 && $1 == "$(cat "$2")" ]] || same=0
    shift 2
  done
  if ((same)); then
    log "already running (pid $(readpid "$PIDF")), same config"
    return 0
  fi
  log "running with another config: restarting"
  cmd_stop
  return 1
}

# ensure_user NAME: a system user without home or shell exists.
ensure_user() { id "$1" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$1"; }

# ensure_cert SUBJECT SAN: a self-signed certificate $RUN/tls/cert.pem (0644) with key
# $RUN/tls/key.pem (0600), made once; SAN is the subjectAltName value.
ensure_cert() {
  local d=$RUN/tls
  mkdir -p "$d"
  if [[ ! -s $d/cert.pem || ! -s $d/key.pem ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "$1" \
      -addext "subjectAltName=$2" \
      -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
    chmod 0644 "$d/cert.pem"
    chmod 0600 "$d/key.pem"
  fi
}

# term_pid PID: the default polite stop, SIGTERM.
term_pid() { kill -TERM "$1" 2>/dev/null || true; }

# stop_daemon NAME KIDS [TERM_FN]: stop the daemon in $PIDF. TERM_FN PID (default term_pid) asks
# it to stop; after 10 s it is KILLed (NAME names it in that log line). With KIDS = kids, its
# children (workers), noted by PID before the stop, are KILLed too if still alive. The pidfile is
# removed. Not running is not an error.
stop_daemon() {
  local name=$1 with_kids=$2 term=${3:-term_pid}
  if ! running; then
    log "not running"
    rm -f "$PIDF"
    return 0
  fi
  local pid kids="" c i
  pid=$(readpid "$PIDF")
  if [[ $with_kids == kids ]]; then
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true) # its workers, by PID
  fi
  "$term" "$pid"
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$name $pid still alive after 10 s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for c in $kids; do
    if alive "$c"; then kill -KILL "$c" 2>/dev/null || true; fi
  done
  rm -f "$PIDF"
  log "stopped (pid $pid)"
}

# status_daemon: print whether the daemon in $PIDF runs; fail when it does not.
status_daemon() {
  if running; then echo "running (pid $(readpid "$PIDF"))"; else
    echo "not running"
    return 1
  fi
}

# dispatch PACKAGES [COMMAND]: run COMMAND (start|stop|restart|status|env|packages) with the
# script's cmd_start, cmd_stop and cmd_env; `packages` prints PACKAGES (the Debian packages the
# daemon needs). Anything else prints the usage and exits 2.
dispatch() {
  local packages=$1
  case "${2:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) status_daemon || exit 1 ;;
  env) cmd_env ;;
  packages) echo "$packages" ;;
  *)
    echo "usage: $0 start|stop|restart|status|env|packages" >&2
    exit 2
    ;;
  esac
}
