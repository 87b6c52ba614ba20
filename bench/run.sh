#!/usr/bin/env bash
# bench/run.sh -- mailgate's load benchmark, in one run, on loopback only.
#
# It installs what is missing (haproxy, nginx, libnginx-mod-mail, libnginx-mod-stream), builds
# mailgate and mailgate-bench, starts the bench backend, nginx's auth_http endpoint, mailgate,
# HAProxy and nginx on 127.0.0.1:30xxx (all forwarding to the same backend), then measures every
# scenario against every target -- direct (the backend itself), mailgate, haproxy, nginx --
# interleaved round by round (the order of the targets rotates each round), runs the
# accounting-at-scale Go benchmarks, and prints a Markdown report: medians over rounds, the
# ratios mailgate/haproxy, mailgate/nginx, mailgate/direct, and the issue's targets met or missed.
# Everything it started is stopped by PID on exit.
#
# Usage:
#   bench/run.sh            the full benchmark (about 25 minutes with the defaults)
#   bench/run.sh --smoke    direct + mailgate only, tiny sizes, one round, no apt, no Go
#                           benchmarks: well under 60 s; exits non-zero if anything fails (CI)
#   bench/run.sh --rounds N
#
# Knobs (environment; defaults for the full run, --smoke in brackets):
#   BENCH_ROUNDS=5 [1]          rounds; each runs every scenario against every target
#   BENCH_SIZE=1GiB [8MiB]      throughput: bytes each way (download and upload)
#   BENCH_LOGINS=2000 [200]     login: sequential logins for p50/p90/p99 at concurrency 1
#   BENCH_CONCURRENCY=8         login: workers for the rate
#   BENCH_DURATION=5s [1s]      login: how long the rate runs
#   BENCH_CONNS=7500 [200]      idle: authenticated connections held (each costs a proxy 2 fds;
#                               the hard nofile limit here is 20000)
#   BENCH_SCENARIOS="throughput login idle"
#   BENCH_TARGETS="direct mailgate haproxy nginx" [direct mailgate]
#                               add "cluster" for a mailgate node of a three-node cluster on a
#                               private redis-server (the same config plus the cluster block);
#                               its column is that node, the other two only join the cluster
#   BENCH_SOURCE=127.0.0.2      client source address ("" = kernel's choice): keeps the bench's
#                               thousands of client sockets off 127.0.0.1 ports others may bind
#   BENCH_PORT_BASE=30000       listeners at BASE+1 ... BASE+293 (below the ephemeral range)
#   BENCH_OUT=/tmp/mailgate-bench/run-<time>   results.jsonl, report.md, logs, configs
#   BENCH_SKIP_INSTALL=1        never call apt-get [set]
#   BENCH_GOBENCH=1 [0]         run go test -bench ./accounting/
#   BENCH_MAILGATE_SRC=<repo>   source tree mailgate (and the accounting benchmarks) are built
#                               from, e.g. an export of a commit: git archive HEAD | tar -x -C DIR
#
# The idle scenario restarts the measured proxy before each measurement, so every proxy starts
# from the same fresh state and memory left over from earlier scenarios cannot hide (or be
# mistaken for) the cost of the held connections.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/usr/local/go/bin:$PATH"
export HOME="${HOME:-/root}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
T0=$SECONDS

SMOKE=0
while (($#)); do
  case $1 in
    --smoke) SMOKE=1 ;;
    --rounds) BENCH_ROUNDS=$2; shift ;;
    --rounds=*) BENCH_ROUNDS=${1#--rounds=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if ((SMOKE)); then
  ROUNDS=${BENCH_ROUNDS:-1} SIZE=${BENCH_SIZE:-8MiB} LOGINS=${BENCH_LOGINS:-200} DURATION=${BENCH_DURATION:-1s}
  CONNS=${BENCH_CONNS:-200} TARGETS=${BENCH_TARGETS:-"direct mailgate"} SKIP_INSTALL=${BENCH_SKIP_INSTALL:-1}
  GOBENCH=${BENCH_GOBENCH:-0} LOGIN_WARMUP=20 SETTLE="-settle-min 1s -settle-max 5s"
else
  ROUNDS=${BENCH_ROUNDS:-5} SIZE=${BENCH_SIZE:-1GiB} LOGINS=${BENCH_LOGINS:-2000} DURATION=${BENCH_DURATION:-5s}
  CONNS=${BENCH_CONNS:-7500} TARGETS=${BENCH_TARGETS:-"direct mailgate haproxy nginx"}
  SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0} GOBENCH=${BENCH_GOBENCH:-1} LOGIN_WARMUP=50
  SETTLE="-settle-min 3s -settle-max 20s"
fi
CONCURRENCY=${BENCH_CONCURRENCY:-8}
SCENARIOS=${BENCH_SCENARIOS:-"throughput login idle"}
SOURCE=${BENCH_SOURCE-127.0.0.2}
BASE=${BENCH_PORT_BASE:-30000}
OUT=${BENCH_OUT:-/tmp/mailgate-bench/run-$(date +%Y%m%d-%H%M%S)}
SRC=$(cd "${BENCH_MAILGATE_SRC:-$ROOT}" && pwd)
RUN=$OUT/run
BIN=$OUT/bin
TOKEN=bench-$RANDOM$RANDOM

L=127.0.0.1
BACKEND=$L:$((BASE + 1)) BACKEND_TLS=$L:$((BASE + 2)) AUTH=$L:$((BASE + 10))
MG_PLAIN=$L:$((BASE + 43)) MG_TLS=$L:$((BASE + 93)) MG_ADMIN=$L:$((BASE + 80))
HP_PLAIN=$L:$((BASE + 143)) HP_TLS=$L:$((BASE + 193))
NG_PLAIN=$L:$((BASE + 243)) NG_TLS=$L:$((BASE + 293))
REDIS=$L:$((BASE + 79)) # the cluster target's private redis-server

say() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { say "error: $*"; exit 1; }
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

mkdir -p "$OUT" "$RUN" "$BIN" /tmp/mailgate-bench
# One bench at a time: runs share the ports.
exec 9>/tmp/mailgate-bench/bench.lock
flock -n 9 || die "another bench/run.sh holds /tmp/mailgate-bench/bench.lock"

# ------------------------------------------------------------------ processes, stopped by PID
declare -A PID=()
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ -n $st && $st != Z ]]; }

# start NAME LOG CMD...: run CMD in its own session, stdio detached; $! is CMD itself (setsid
# does not fork when the caller is not a process-group leader, as in a script).
start() {
  local name=$1 log=$2
  shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  PID[$name]=$!
}

stop() {
  local name=$1 pid=${PID[$1]:-} i
  [[ -n $pid ]] || return 0
  unset "PID[$name]"
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    say "$name (pid $pid) ignored TERM; KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for n in nginx haproxy mailgate cluster cluster2 cluster3 redis authhttp backend; do stop "$n"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# port_free HOST:PORT -- nothing accepts there yet
port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

wait_port() {
  local a=$1 name=$2 i
  for ((i = 0; i < 200; i++)); do
    if ! port_free "$a"; then return 0; fi
    alive "${PID[$name]}" || die "$name exited while starting; see its log in $RUN"
    sleep 0.05
  done
  die "$name: nothing listens on $a after 10 s; see its log in $RUN"
}

# ------------------------------------------------------------------ 1. packages
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
install_missing() {
  local pkgs=() p
  if has_target haproxy; then installed haproxy || pkgs+=(haproxy); fi
  if has_target nginx; then
    for p in nginx libnginx-mod-mail libnginx-mod-stream; do installed "$p" || pkgs+=("$p"); done
  fi
  command -v ps >/dev/null 2>&1 || pkgs+=(procps)
  ((${#pkgs[@]})) || return 0
  [[ $SKIP_INSTALL == 1 ]] && die "missing ${pkgs[*]} and BENCH_SKIP_INSTALL=1"
  [[ $(id -u) == 0 ]] || die "missing ${pkgs[*]}; run as root (or install them)"
  say "installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # postinst must not start the stock daemons (nginx on port 80 ...).
  if [[ ! -x /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >"$OUT/apt.log" 2>&1; then
    say "apt-get install failed; apt-get update and retry"
    apt-get update >>"$OUT/apt.log" 2>&1 || true
    apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$OUT/apt.log" 2>&1 ||
      die "apt-get install ${pkgs[*]} failed; see $OUT/apt.log"
  fi
}
install_missing
command -v go >/dev/null || die "go is not on PATH"

# ------------------------------------------------------------------ 2. build, certificate, configs
say "building mailgate (from $SRC) and mailgate-bench into $BIN"
(cd "$SRC" && go build -o "$BIN/mailgate" ./cmd/mailgate) || die "building mailgate in $SRC failed"
(cd "$ROOT" && go build -o "$BIN/mailgate-bench" ./cmd/mailgate-bench) || die "building mailgate-bench failed"
MGB=$BIN/mailgate-bench
"$MGB" cert -dir "$RUN/tls"
render() {
  sed -e "s#@RUN@#$RUN#g" -e "s#@TOKEN@#$TOKEN#g" -e "s#@BACKEND@#$BACKEND#g" -e "s#@AUTH@#$AUTH#g" \
    -e "s#@MG_PLAIN@#$MG_PLAIN#g" -e "s#@MG_TLS@#$MG_TLS#g" -e "s#@MG_ADMIN@#$MG_ADMIN#g" \
    -e "s#@HP_PLAIN@#$HP_PLAIN#g" -e "s#@HP_TLS@#$HP_TLS#g" \
    -e "s#@NG_PLAIN@#$NG_PLAIN#g" -e "s#@NG_TLS@#$NG_TLS#g" "$1" >"$2"
}
mkdir -p "$RUN/nginx"
render "$ROOT/bench/mailgate.yaml.in" "$RUN/mailgate.yaml"
# The cluster target: node k listens on BASE+44+k (plain), BASE+94+k (TLS), admin BASE+80+k.
cl_plain() { echo "$L:$((BASE + 44 + $1))"; }
cl_tls() { echo "$L:$((BASE + 94 + $1))"; }
cl_admin() { echo "$L:$((BASE + 80 + $1))"; }
if has_target cluster; then
  for k in 1 2 3; do
    sed -e "s#^node: bench#node: cluster$k#" -e "s#$MG_PLAIN#$(cl_plain $k)#" -e "s#$MG_TLS#$(cl_tls $k)#" \
      -e "s#$MG_ADMIN#$(cl_admin $k)#" "$RUN/mailgate.yaml" >"$RUN/cluster$k.yaml"
    printf 'cluster:\n  redis:\n    addresses: ["%s"]\n' "$REDIS" >>"$RUN/cluster$k.yaml"
  done
fi
render "$ROOT/bench/haproxy.cfg.in" "$RUN/haproxy.cfg"
render "$ROOT/bench/nginx.conf.in" "$RUN/nginx.conf"

for a in $BACKEND $BACKEND_TLS $AUTH $MG_PLAIN $MG_TLS $MG_ADMIN $HP_PLAIN $HP_TLS $NG_PLAIN $NG_TLS; do
  port_free "$a" || die "$a is already in use (a leftover bench? another service?)"
done

# ------------------------------------------------------------------ 3. servers
start_backend() {
  start backend "$RUN/backend.log" "$MGB" backend -listen "$BACKEND" -tls-listen "$BACKEND_TLS" \
    -cert "$RUN/tls/cert.pem" -key "$RUN/tls/key.pem"
  wait_port "$BACKEND" backend
  wait_port "$BACKEND_TLS" backend
}
start_authhttp() {
  start authhttp "$RUN/authhttp.log" "$MGB" authhttp -listen "$AUTH" -backend "$BACKEND"
  wait_port "$AUTH" authhttp
}
start_mailgate() {
  start mailgate "$RUN/mailgate.log" "$BIN/mailgate" serve -config "$RUN/mailgate.yaml"
  wait_port "$MG_PLAIN" mailgate
  wait_port "$MG_TLS" mailgate
  wait_port "$MG_ADMIN" mailgate
}
start_haproxy() {
  haproxy -c -q -f "$RUN/haproxy.cfg"
  start haproxy "$RUN/haproxy.log" haproxy -db -f "$RUN/haproxy.cfg"
  wait_port "$HP_PLAIN" haproxy
  wait_port "$HP_TLS" haproxy
}
start_nginx() {
  nginx -q -t -p "$RUN/nginx/" -e "$RUN/nginx/error.log" -c "$RUN/nginx.conf" 2>>"$RUN/nginx/error.log" ||
    die "nginx -t failed; see $RUN/nginx/error.log"
  start nginx "$RUN/nginx/stderr.log" nginx -p "$RUN/nginx/" -e "$RUN/nginx/error.log" -c "$RUN/nginx.conf"
  wait_port "$NG_PLAIN" nginx
  wait_port "$NG_TLS" nginx
}
# The cluster target: its redis-server (persistence as in production: appendonly, fsync every
# second) and the two other nodes start once; node 1, the one measured, (re)starts each time.
start_cluster() {
  if [[ -z ${PID[redis]:-} ]]; then
    mkdir -p "$RUN/redis"
    start redis "$RUN/redis.log" redis-server --bind "${REDIS%:*}" --port "${REDIS##*:}" --dir "$RUN/redis" \
      --appendonly yes --appendfsync everysec --save ""
    wait_port "$REDIS" redis
  fi
  local k
  for k in 2 3; do
    if [[ -z ${PID[cluster$k]:-} ]]; then
      start "cluster$k" "$RUN/cluster$k.log" "$BIN/mailgate" serve -config "$RUN/cluster$k.yaml"
      wait_port "$(cl_admin $k)" "cluster$k"
    fi
  done
  start cluster "$RUN/cluster1.log" "$BIN/mailgate" serve -config "$RUN/cluster1.yaml"
  wait_port "$(cl_plain 1)" cluster
  wait_port "$(cl_tls 1)" cluster
  wait_port "$(cl_admin 1)" cluster
}
restart() { stop "$1"; "start_$1"; }

# pids_of NAME -- the processes whose memory and CPU count for a proxy: mailgate and HAProxy are
# one process each; nginx's are its workers (the master only supervises).
pids_of() {
  local pid=${PID[$1]} w i
  if [[ $1 != nginx ]]; then echo "$pid"; return; fi
  for ((i = 0; i < 100; i++)); do
    w=$(ps -o pid= --ppid "$pid" | tr -s ' \n' '+' | sed 's/^+//; s/+$//')
    if [[ $(tr '+' '\n' <<<"$w" | grep -c .) -ge 2 ]]; then echo "$w"; return; fi
    sleep 0.05
  done
  die "nginx (pid $pid) has no two workers"
}

start_backend
has_target nginx && start_authhttp
has_target mailgate && start_mailgate
has_target cluster && start_cluster
has_target haproxy && start_haproxy
has_target nginx && start_nginx
say "servers up: backend $BACKEND (tls $BACKEND_TLS)$(has_target mailgate && echo ", mailgate $MG_PLAIN/$MG_TLS")$(has_target haproxy && echo ", haproxy $HP_PLAIN/$HP_TLS")$(has_target nginx && echo ", nginx $NG_PLAIN/$NG_TLS")"

# ------------------------------------------------------------------ 4. measurements
addr_of() { # NAME VARIANT
  case $1-$2 in
    direct-plain) echo "$BACKEND" ;; direct-tls) echo "$BACKEND_TLS,tls" ;;
    mailgate-plain) echo "$MG_PLAIN" ;; mailgate-tls) echo "$MG_TLS,tls" ;;
    cluster-plain) cl_plain 1 ;; cluster-tls) echo "$(cl_tls 1),tls" ;;
    haproxy-plain) echo "$HP_PLAIN" ;; haproxy-tls) echo "$HP_TLS,tls" ;;
    nginx-plain) echo "$NG_PLAIN" ;; nginx-tls) echo "$NG_TLS,tls" ;;
    *) die "unknown target $1" ;;
  esac
}
# args for "mailgate-bench run": the targets given, with their PIDs and mailgate's admin API.
run_args() {
  local t v
  ARGS=(-o "$OUT/results.jsonl" -admin-token "$TOKEN")
  [[ -n $SOURCE ]] && ARGS+=(-source "$SOURCE")
  for t in "$@"; do
    for v in plain tls; do ARGS+=(-target "$t=$(addr_of "$t" "$v")"); done
    [[ $t == direct ]] || ARGS+=(-pid "$t=$(pids_of "$t")")
    [[ $t == mailgate ]] && ARGS+=(-admin "mailgate=http://$MG_ADMIN")
    [[ $t == cluster ]] && ARGS+=(-admin "cluster=http://$(cl_admin 1)")
  done
  return 0
}
# rotate R NAMES... -- the names, starting with the (R-1)th, as "run -rotate" orders targets.
rotate() {
  local r=$1
  shift
  local n=$# k i a=("$@")
  ((n)) || return 0
  k=$(((r - 1) % n))
  for ((i = 0; i < n; i++)); do echo "${a[$(((k + i) % n))]}"; done
}

FAILED=0
read -ra TGT <<<"$TARGETS"
PROXIES=()
for t in "${TGT[@]}"; do [[ $t == direct ]] || PROXIES+=("$t"); done
say "results: $OUT/results.jsonl ($ROUNDS round(s): $SCENARIOS; targets: $TARGETS)"
for ((r = 1; r <= ROUNDS; r++)); do
  for sc in $SCENARIOS; do
    case $sc in
      throughput)
        run_args "${TGT[@]}"
        "$MGB" run -scenario throughput -round "$r" -size "$SIZE" "${ARGS[@]}" || FAILED=1
        ;;
      login)
        run_args "${TGT[@]}"
        "$MGB" run -scenario login -round "$r" -logins "$LOGINS" -login-warmup "$LOGIN_WARMUP" \
          -concurrency "$CONCURRENCY" -duration "$DURATION" "${ARGS[@]}" || FAILED=1
        ;;
      idle)
        # Each proxy from a fresh start, one client link at a time; "direct" has no proxy.
        for t in $(rotate "$r" "${PROXIES[@]}"); do
          for v in plain tls; do
            restart "$t"
            run_args
            ARGS+=(-target "$t=$(addr_of "$t" "$v")" -pid "$t=$(pids_of "$t")")
            [[ $t == mailgate ]] && ARGS+=(-admin "mailgate=http://$MG_ADMIN")
            [[ $t == cluster ]] && ARGS+=(-admin "cluster=http://$(cl_admin 1)")
            # shellcheck disable=SC2086
            "$MGB" run -scenario idle -round "$r" -conns "$CONNS" $SETTLE "${ARGS[@]}" || FAILED=1
          done
        done
        ;;
      *) die "unknown scenario $sc" ;;
    esac
  done
done

if [[ $GOBENCH == 1 ]]; then
  say "accounting at scale: go test -run '^\$' -bench . ./accounting/"
  (cd "$SRC" && go test -run '^$' -bench . ./accounting/) >"$OUT/gobench.txt" 2>&1 || FAILED=1
fi

# ------------------------------------------------------------------ 5. report
{
  echo "## mailgate bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- mailgate built from $SRC$(cd "$SRC" && git rev-parse --short HEAD 2>/dev/null | sed 's/^/ at /')$(
    cd "$SRC" && git status --porcelain 2>/dev/null | grep -q . && echo ' (work tree with uncommitted changes)')"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), $(go version | cut -d' ' -f3-)"
  has_target haproxy && echo "- $(haproxy -v 2>&1 | head -1)"
  has_target nginx && echo "- $(nginx -v 2>&1 | head -1), $(openssl version 2>/dev/null || echo 'openssl ?')"
  ((SMOKE)) && echo "- SMOKE RUN: tiny sizes, one round; the figures only show that every scenario works"
  echo "- rounds $ROUNDS; throughput $SIZE each way; login $LOGINS at c=1, c=$CONCURRENCY for $DURATION; idle $CONNS connections; client source ${SOURCE:-default}"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); wall time $((SECONDS - T0)) s"
  echo
  gb=()
  [[ -s $OUT/gobench.txt ]] && gb=(-gobench "$OUT/gobench.txt")
  "$MGB" report "${gb[@]}" "$OUT/results.jsonl" || FAILED=1
} >"$OUT/report.md"
cat "$OUT/report.md"
say "report: $OUT/report.md; raw results: $OUT/results.jsonl; $((SECONDS - T0)) s"
if ((FAILED)); then
  say "FAILED: some measurement or step failed (see above and $RUN/*.log)"
  exit 1
fi
