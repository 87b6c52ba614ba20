#!/usr/bin/env bash
# scripts/package.sh -- build mailgate's release artifacts (issue 20).
#
#   scripts/package.sh deb      static binary dist/mailgate + dist/mailgate_<version>-1_<arch>.deb
#   scripts/package.sh docker   the Docker image mailgate:<version> (only if `docker info` works)
#   scripts/package.sh all      deb, then docker
#   scripts/package.sh test     deb, then (root, Debian) dpkg -i it, check the install, reinstall,
#                               dpkg -r and dpkg -P it, leaving the machine as it found it
#
# The binary is CGO_ENABLED=0 -trimpath with -X main.version=<git describe>. The .deb is made by
# nfpm run as `go run github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION` (not in go.mod) from
# packaging/nfpm.yaml. Exit status is non-zero when any step or check failed; a summary closes
# the output.
#
# Knobs: VERSION (default: git describe --tags --always --dirty)  GOARCH (default: go env GOARCH)
#        DIST=dist  NFPM_VERSION=v2.48.0  IMAGE=mailgate
#        MAILGATE_PKG_TEST_FORCE=1 (test: purge an already installed mailgate package first)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="/usr/local/go/bin:$PATH"
export HOME="${HOME:-/root}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
NFPM_VERSION="${NFPM_VERSION:-v2.48.0}"
DIST="${DIST:-dist}"
IMAGE="${IMAGE:-mailgate}"
T0=$SECONDS

say() { echo "[package.sh $(date +%H:%M:%S)] $*"; }
die() { say "error: $*"; exit 1; }

RESULTS=()
FAILED=0
pass() { RESULTS+=("PASS  $*"); say "ok: $*"; }
fail() { RESULTS+=("FAIL  $*"); say "FAILED: $*"; FAILED=1; }
skip() { RESULTS+=("SKIP  $*"); say "skipped: $*"; }
# check NAME CMD...: run CMD (output shown), record PASS or FAIL under NAME.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
summary() {
  echo
  echo "==== scripts/package.sh $MODE summary ($((SECONDS - T0)) s) ===="
  local r
  for r in "${RESULTS[@]}"; do echo "  $r"; done
  if ((FAILED)); then echo "RESULT: FAIL"; else echo "RESULT: PASS"; fi
}

MODE="${1:-deb}"
case "$MODE" in
deb | docker | all | test) ;;
-h | --help | help)
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
  ;;
*) die "usage: scripts/package.sh [deb|docker|all|test]" ;;
esac

command -v go >/dev/null 2>&1 || die "go is not on PATH (expected /usr/local/go/bin/go)"
GOARCH="${GOARCH:-$(go env GOARCH)}"
export GOARCH

# ---------------------------------------------------------------- versions
# RAW_VERSION goes into the binary (mailgate version); DEB_VERSION is RAW_VERSION made a Debian
# upstream version: no leading v, starting with a digit, commits after a tag sorting after it,
# a pre-release (-rc1) before the release:
#   v1.2.3 -> 1.2.3   v1.2.3-4-gabc1234 -> 1.2.3+git4.gabc1234   v1.3.0-rc1 -> 1.3.0~rc1
#   abc1234 (no tag) -> 0.0.0+git.abc1234   ...-dirty -> ...+dirty / .dirty
RAW_VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
deb_version() {
  local v=${1#v} dirty="" base
  if [[ $v == *-dirty ]]; then dirty=dirty v=${v%-dirty}; fi
  if [[ $v =~ ^([0-9].*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
    base=${BASH_REMATCH[1]//-/\~}
    v="$base+git${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}${dirty:+.$dirty}"
  elif [[ $v =~ ^[0-9] ]]; then
    v="${v//-/\~}${dirty:++$dirty}"
  else
    v="0.0.0+git.$v${dirty:+.$dirty}"
  fi
  printf '%s' "$v" | tr -c 'A-Za-z0-9.+~' '.'
}
DEB_VERSION="$(deb_version "$RAW_VERSION")"
DEB_ARCH="$(dpkg --print-architecture 2>/dev/null || echo "$GOARCH")"
[[ $GOARCH == "$(go env GOHOSTARCH)" ]] || DEB_ARCH="$GOARCH" # nfpm maps GOARCH names for deb
DEB="$DIST/mailgate_${DEB_VERSION}-1_${DEB_ARCH}.deb"

# ---------------------------------------------------------------- deb
build_binary() {
  mkdir -p "$DIST"
  say "go build ./cmd/mailgate (version $RAW_VERSION, linux/$GOARCH, static)"
  CGO_ENABLED=0 GOOS=linux go build -trimpath \
    -ldflags "-s -w -X main.version=$RAW_VERSION" \
    -o "$DIST/mailgate" ./cmd/mailgate || return 1
  # A static binary: go records CGO_ENABLED=0, and there is no ELF interpreter.
  go version -m "$DIST/mailgate" | grep -q 'CGO_ENABLED=0' || { say "dist/mailgate is not CGO_ENABLED=0"; return 1; }
  if command -v readelf >/dev/null 2>&1 && readelf -l "$DIST/mailgate" | grep -q 'INTERP'; then
    say "dist/mailgate has an ELF interpreter (dynamically linked)"
    return 1
  fi
}

build_deb() {
  rm -f "$DIST"/mailgate_*.deb
  say "nfpm $NFPM_VERSION: $DEB"
  VERSION="$DEB_VERSION" go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" \
    package -f packaging/nfpm.yaml -p deb -t "$DIST/" || return 1
  [[ -f $DEB ]] || { say "nfpm did not write $DEB:"; ls -l "$DIST" >&2; return 1; }
}

step_deb() {
  local t=$SECONDS
  if ! build_binary; then fail "static binary $DIST/mailgate"; return 1; fi
  pass "static binary $DIST/mailgate ($RAW_VERSION, $((SECONDS - t)) s)"
  t=$SECONDS
  if ! build_deb; then fail "nfpm deb"; return 1; fi
  pass "nfpm $DEB ($((SECONDS - t)) s)"
}

# ---------------------------------------------------------------- docker
step_docker() {
  if ! command -v docker >/dev/null 2>&1; then skip "docker image (no docker command)"; return 0; fi
  if ! docker info >/dev/null 2>&1; then skip "docker image (docker info fails: no daemon)"; return 0; fi
  local tag
  tag="$(printf '%s' "$RAW_VERSION" | tr -c 'A-Za-z0-9_.-' '-')"
  say "docker build -t $IMAGE:$tag"
  if docker build --build-arg "VERSION=$RAW_VERSION" -t "$IMAGE:$tag" -t "$IMAGE:latest" . &&
    docker run --rm --entrypoint /usr/bin/mailgate "$IMAGE:$tag" version; then
    pass "docker image $IMAGE:$tag"
  else
    fail "docker image $IMAGE:$tag"
  fi
}

# ---------------------------------------------------------------- test
TEST_INSTALLED=0
USER_EXISTED=1
SMOKE_PID=""
SMOKE_DIR=""

cleanup_test() {
  if [[ -n $SMOKE_PID ]] && kill -0 "$SMOKE_PID" 2>/dev/null; then
    kill "$SMOKE_PID" 2>/dev/null
    wait "$SMOKE_PID" 2>/dev/null
  fi
  [[ -n $SMOKE_DIR ]] && rm -rf "$SMOKE_DIR"
  if ((TEST_INSTALLED)) && dpkg-query -W -f='${Status}' mailgate 2>/dev/null | grep -q 'installed\|config-files'; then
    say "cleanup: dpkg -P mailgate"
    dpkg -P mailgate >/dev/null 2>&1 || true
  fi
  # The package keeps its user on purge (Debian practice); the test removes the one it made.
  if ((TEST_INSTALLED)) && ((!USER_EXISTED)) && getent passwd mailgate >/dev/null; then
    userdel mailgate 2>/dev/null || true
    getent group mailgate >/dev/null && groupdel mailgate 2>/dev/null || true
  fi
}

owner_is() { [[ $(stat -c '%U:%G %a' "$1" 2>/dev/null) == "$2" ]] || { say "$1: $(stat -c '%U:%G %a' "$1" 2>&1), want $2"; return 1; }; }
free_port() {
  local p
  for p in $(seq "$1" $(($1 + 50))); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# smoke_serve: run the installed config as the mailgate user, as the unit does (its listeners
# moved to free loopback ports): the token, certificate and state dir must be readable/writable.
# No IMAP backend runs, so the check stops at the TLS handshake (the greeting needs the backend).
smoke_serve() {
  local imaps admin token i code
  imaps=$(free_port 39993) && admin=$(free_port 39880) || { say "no free port"; return 1; }
  SMOKE_DIR=$(mktemp -d /tmp/mailgate-pkg.XXXXXX)
  chmod 0755 "$SMOKE_DIR"
  sed -e "s/0\.0\.0\.0:993/127.0.0.1:$imaps/" -e "s/127\.0\.0\.1:1880/127.0.0.1:$admin/" \
    /etc/mailgate/mailgate.yaml >"$SMOKE_DIR/mailgate.yaml"
  chmod 0644 "$SMOKE_DIR/mailgate.yaml"
  setpriv --reuid=mailgate --regid=mailgate --init-groups --no-new-privs \
    /usr/bin/mailgate serve -config "$SMOKE_DIR/mailgate.yaml" >"$SMOKE_DIR/serve.log" 2>&1 &
  SMOKE_PID=$!
  token=$(cat /etc/mailgate/admin-token)
  code=""
  for ((i = 0; i < 100; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$admin/api/v1/stats" 2>/dev/null) && [[ $code == 200 ]] && break
    kill -0 "$SMOKE_PID" 2>/dev/null || break
    sleep 0.1
  done
  local ok=0
  if [[ $code != 200 ]]; then
    say "admin API /api/v1/stats answered ${code:-nothing}"
    ok=1
  elif ! echo | timeout 5 openssl s_client -connect "127.0.0.1:$imaps" 2>/dev/null | grep -q '^subject=.*CN *= *'; then
    say "no TLS handshake with the generated certificate on 127.0.0.1:$imaps"
    ok=1
  fi
  kill "$SMOKE_PID" 2>/dev/null
  wait "$SMOKE_PID" 2>/dev/null
  SMOKE_PID=""
  if ((ok == 0)) && ! owner_is /var/lib/mailgate/state.db "mailgate:mailgate 600"; then ok=1; fi
  ((ok == 0)) || tail -n 20 "$SMOKE_DIR/serve.log" >&2
  return $ok
}

step_test() {
  [[ $(id -u) == 0 ]] || { fail "test: must run as root (dpkg -i)"; return 1; }
  command -v dpkg >/dev/null 2>&1 || { fail "test: no dpkg"; return 1; }
  exec 8>/tmp/mailgate-package-test.lock
  flock -w 300 8 || { fail "test: another package.sh test holds /tmp/mailgate-package-test.lock"; return 1; }
  if dpkg-query -W -f='${Status}' mailgate 2>/dev/null | grep -q 'installed\|config-files'; then
    if [[ ${MAILGATE_PKG_TEST_FORCE:-} != 1 ]]; then
      fail "test: a mailgate package is already installed (dpkg -P mailgate, or MAILGATE_PKG_TEST_FORCE=1)"
      return 1
    fi
    dpkg -P mailgate >/dev/null || { fail "test: dpkg -P of the installed mailgate"; return 1; }
  fi
  getent passwd mailgate >/dev/null || USER_EXISTED=0
  trap cleanup_test EXIT
  TEST_INSTALLED=1

  say "dpkg -i $DEB"
  if ! dpkg -i "$DEB"; then fail "dpkg -i $DEB"; return 1; fi
  pass "dpkg -i $DEB"
  check "mailgate version prints $RAW_VERSION" bash -c '[[ "$(/usr/bin/mailgate version)" == "mailgate $0" ]]' "$RAW_VERSION"
  check "mailgate check -config /etc/mailgate/mailgate.yaml" /usr/bin/mailgate check -config /etc/mailgate/mailgate.yaml
  check "id mailgate (system user, nologin)" bash -c 'id mailgate && getent passwd mailgate | grep -q ":/usr/sbin/nologin$"'
  check "/var/lib/mailgate owned by mailgate" owner_is /var/lib/mailgate "mailgate:mailgate 750"
  check "/etc/mailgate/admin-token root:mailgate 0640" owner_is /etc/mailgate/admin-token "root:mailgate 640"
  check "/etc/mailgate/tls/mailgate.key root:mailgate 0640" owner_is /etc/mailgate/tls/mailgate.key "root:mailgate 640"
  check "/etc/mailgate/mailgate.yaml is a conffile" bash -c 'dpkg-query -W -f="\${Conffiles}" mailgate | grep -q "/etc/mailgate/mailgate.yaml "'
  check "unit at /lib/systemd/system/mailgate.service" test -f /lib/systemd/system/mailgate.service
  if command -v systemd-analyze >/dev/null 2>&1; then
    check "systemd-analyze verify mailgate.service" systemd-analyze verify /lib/systemd/system/mailgate.service
  else
    skip "systemd-analyze verify (not installed)"
  fi
  check "serve as user mailgate: admin API + IMAPS TLS handshake + state.db" smoke_serve

  local token_before
  token_before=$(cat /etc/mailgate/admin-token 2>/dev/null)
  echo "# local edit" >>/etc/mailgate/mailgate.yaml
  say "dpkg -i $DEB again (the upgrade path of postinst)"
  if dpkg -i "$DEB"; then pass "reinstall (postinst configure with the old version)"; else fail "reinstall"; fi
  check "reinstall kept the admin token" bash -c '[[ "$(cat /etc/mailgate/admin-token)" == "$0" ]]' "$token_before"
  check "reinstall kept the edited config (noreplace)" grep -q '^# local edit$' /etc/mailgate/mailgate.yaml

  say "dpkg -r mailgate"
  if dpkg -r mailgate; then pass "dpkg -r mailgate"; else fail "dpkg -r mailgate"; fi
  check "removed: /usr/bin/mailgate gone, config and state kept" \
    bash -c '! test -e /usr/bin/mailgate && test -f /etc/mailgate/mailgate.yaml && test -d /var/lib/mailgate'
  say "dpkg -P mailgate"
  if dpkg -P mailgate; then pass "dpkg -P mailgate"; else fail "dpkg -P mailgate"; fi
  check "purged: /etc/mailgate and /var/lib/mailgate gone" bash -c '! test -e /etc/mailgate && ! test -e /var/lib/mailgate'
}

# ---------------------------------------------------------------- main
case "$MODE" in
deb) step_deb ;;
docker) step_docker ;;
all) step_deb && step_docker ;;
test) step_deb && step_test ;;
esac
summary
exit "$FAILED"
