#!/usr/bin/env bash
# Clean-room install test: the built wheel and npm tarball on a machine that
# has no build tools. A Debian 12 minimal root (debootstrap --variant=minbase
# with python3, python3-venv, ca-certificates; cached, keyed by that list)
# gets the host's Node binary and npm, and nothing else: no compiler, CMake,
# pkg-config, -dev package, libhiredis, libcjson or libcurl (checked). Inside
# it (chroot, as root) `pip install` the wheel into a venv and `npm install`
# the tarball into a fresh app, then in each language (cleanroom_flow.py,
# cleanroom_flow.cjs) a burst is batched and its turns completed
#   (a) on the memory store,
#   (b) on Redis over TLS: a redis-server with --tls-port on loopback outside
#       the chroot, certificates made by openssl now, server verified;
#   (c) with the Responses backend against tests/emulator/emulator.py,
#       outside the chroot on loopback.
# Fails if a library is missing or comes from the system (beyond glibc, and
# libstdc++/libgcc_s for Node), if anything calls a compiler or a build tool
# (cc, gcc, c++, g++, clang, cmake, make, ld, pkg-config, node-gyp are
# wrappers in the chroot that record the call and fail), if npm warns about
# install scripts, or if a turn is lost, duplicated, reordered or split.
#
#   tests/install/cleanroom.sh [DIST_DIR]
# DIST_DIR holds runlane-*.whl and runlane-*.tgz (default: scripts/package.sh
# builds them into build/cleanroom-dist). Needs root, debootstrap (or the
# cached root), redis-server, openssl, node >= 20 and npm on the host, and
# the package registries (pip: cffi; npm: runlane's dependencies).
# Env: RUNLANE_CLEANROOM_CACHE (default ~/.cache/runlane/cleanroom),
#      KEEP=1 keeps the work directory (unmounted).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
log() { printf '[cleanroom] %s\n' "$*"; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
SCALE=${RUNLANE_TEST_TIME_SCALE:-1}

# ---- the distributables ----
DIST=${1:-}
if [ -z "$DIST" ]; then
  DIST=$REPO/build/cleanroom-dist
  log "building the distributables (scripts/package.sh $DIST)"
  "$REPO/scripts/package.sh" "$DIST"
fi
DIST=$(cd "$DIST" && pwd)
WHEEL=$(ls "$DIST"/runlane-*-manylinux*_x86_64.whl 2>/dev/null | tail -1)
TGZ=$(ls "$DIST"/runlane-*.tgz 2>/dev/null | tail -1)
[ -f "$WHEEL" ] && [ -f "$TGZ" ] || die "no wheel or npm tarball in $DIST"

# ---- the cached Debian 12 minimal root ----
SUITE=bookworm
INCLUDE=python3,python3-venv,ca-certificates
CACHE=${RUNLANE_CLEANROOM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/runlane/cleanroom}
KEY=$(printf '%s %s %s\n' "$SUITE" minbase "$INCLUDE" | sha256sum | cut -c1-12)
BASE=$CACHE/$SUITE-minbase-$KEY
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # one debootstrap at a time; readers wait for it
if [ ! -f "$BASE.ok" ]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/deps.sh installs it)"
  log "debootstrap $SUITE (minbase, $INCLUDE) into $BASE (once; ~1 min, ~275 MB)"
  rm -rf "$BASE" "$BASE.tmp"
  nice debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$BASE.tmp" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  mv "$BASE.tmp" "$BASE"
  touch "$BASE.ok"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/runlane-cleanroom.XXXXXX")
R=$WORK/root
REDIS_PID=""
EMU_PID=""
cleanup() {
  local rc=$?
  [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
  for m in "$R/dev" "$R/proc"; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || umount -l "$m"; fi
  done
  # Never delete through a mount (a bound /dev would be the host's).
  if grep -q " $R/" /proc/mounts; then
    log "still mounted under $R: leaving $WORK"
  elif [ "${KEEP:-0}" = 1 ]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
log "fresh copy of the root in $R"
cp -a "$BASE" "$R"
flock -u 9

# ---- the root is clean ----
for tool in cc gcc c++ g++ clang cmake make ld pkg-config pkgconf; do
  if chroot "$R" /bin/sh -c "command -v $tool" >/dev/null 2>&1; then die "the clean root has $tool"; fi
done
BAD_PKGS=$(chroot "$R" dpkg-query -W -f '${Package}\n' \
  | grep -E -- '-dev$|^libhiredis|^libcjson|^libcurl|^curl$|^(gcc|g\+\+|cpp|clang)(-[0-9]+)?$|^cmake|^make$|^pkg-?conf|^binutils' || true)
[ -z "$BAD_PKGS" ] || die "the clean root has packages it must not: $BAD_PKGS"
BAD_LIBS=$(find "$R/usr/lib" "$R/usr/local" \( -name 'libhiredis*' -o -name 'libcjson*' -o -name 'libcurl*' \) -print 2>/dev/null || true)
[ -z "$BAD_LIBS" ] || die "the clean root has libraries it must not: $BAD_LIBS"
log "clean: no compiler, cmake, make, pkg-config, -dev package, hiredis, cJSON or curl"

# ---- Node from the host; build tools that only record a call and fail ----
NODE=$(readlink -f "$(command -v node)")
NPM_DIR=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || die "node >= 20 needed"
install -m 755 "$NODE" "$R/usr/local/bin/node"
mkdir -p "$R/usr/local/lib/node_modules"
cp -a "$NPM_DIR" "$R/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"
mkdir -p "$R/opt/trap/bin"
for tool in cc gcc c++ g++ clang clang++ cmake make ld pkg-config node-gyp swig; do
  cat >"$R/opt/trap/bin/$tool" <<EOF
#!/bin/sh
echo "$tool \$*" >>/cleanroom/compiler-calls.log
echo "cleanroom: $tool was called (no build tools here)" >&2
exit 127
EOF
  chmod 755 "$R/opt/trap/bin/$tool"
done

# ---- network and certificates (pip and npm reach the registries) ----
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$R/cleanroom/dist"
cp "$HOST_CA" "$R/cleanroom/host-ca.crt"
cp "$WHEEL" "$TGZ" "$R/cleanroom/dist/"
cp "$HERE/cleanroom_flow.py" "$HERE/cleanroom_flow.cjs" "$R/cleanroom/"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- Redis over TLS, outside the chroot ----
CERTS=$WORK/certs
mkdir -p "$CERTS"
(
  cd "$CERTS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=runlane cleanroom CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.crt 2>/dev/null
)
cp "$CERTS/ca.crt" "$R/cleanroom/redis-ca.crt"
REDIS_URL=""
for _ in 1 2 3 4 5; do
  PORT=$(free_port)
  redis-server --port 0 --tls-port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --tls-cert-file "$CERTS/server.crt" --tls-key-file "$CERTS/server.key" \
    --tls-ca-cert-file "$CERTS/ca.crt" --tls-auth-clients no \
    --daemonize yes --pidfile "$WORK/redis.pid" --dir "$WORK" --logfile "$WORK/redis.log" || continue
  for _ in $(seq 50); do
    if redis-cli --tls --cacert "$CERTS/ca.crt" -p "$PORT" ping >/dev/null 2>&1; then
      REDIS_URL="rediss://127.0.0.1:$PORT/0"
      break 2
    fi
    sleep 0.1
  done
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null
  rm -f "$WORK/redis.pid"
done
[ -n "$REDIS_URL" ] || { cat "$WORK/redis.log" 2>/dev/null; die "redis-server with TLS did not start"; }
REDIS_PID=$(cat "$WORK/redis.pid")
log "redis-server (TLS only) on $REDIS_URL"

# ---- the OpenAI emulator, outside the chroot ----
python3 "$REPO/tests/emulator/emulator.py" --port 0 >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
for _ in $(seq 100); do
  grep -q '^EMULATOR_PORT=' "$WORK/emulator.out" 2>/dev/null && break
  kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/emulator.err"; die "the emulator died"; }
  sleep 0.1
done
EMU_PORT=$(sed -n 's/^EMULATOR_PORT=//p' "$WORK/emulator.out")
[ -n "$EMU_PORT" ] || die "the emulator did not start"
log "emulator on 127.0.0.1:$EMU_PORT"

# ---- inside: install and run ----
cat >"$R/cleanroom/run.sh" <<'EOF'
#!/bin/sh
# Runs in the chroot. $1: python | node.
set -eu
cd /cleanroom
# What a bundled object loads: its own copies, glibc, and for Node libstdc++/libgcc_s.
only_bundled() { # file, directory of its copies, allowed system sonames (regex)
  out=$(ldd "$1") || { echo "$out"; echo "ldd failed on $1"; return 1; }
  echo "$out" | grep -q 'not found' && { echo "$out"; echo "missing libraries for $1"; return 1; }
  stray=$(echo "$out" | while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    case "$(readlink -f "$path")" in "$2"*) continue ;; esac
    echo "$name" | grep -Eq "$3" || echo "$name => $path"
  done)
  [ -z "$stray" ] || { echo "$1 loads from the system: $stray"; return 1; }
}
GLIBC='^(linux-vdso|ld-linux[-a-z0-9_.]*|libc|libm|libpthread|libdl|librt|libresolv)[.]so'
case "$1" in
python)
  python3 -m venv /cleanroom/venv
  /cleanroom/venv/bin/pip install -q --only-binary :all: /cleanroom/dist/runlane-*.whl
  SITE=$(/cleanroom/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  only_bundled "$(ls "$SITE"/runlane/_native*.so)" "$SITE/runlane.libs/" "$GLIBC"
  cd /tmp && /cleanroom/venv/bin/python /cleanroom/cleanroom_flow.py
  ;;
node)
  mkdir -p /cleanroom/app && cd /cleanroom/app
  echo '{ "name": "cleanroom-app", "version": "0.0.0", "private": true }' >package.json
  npm install --no-audit --no-fund /cleanroom/dist/runlane-*.tgz >npm-install.log 2>&1 || { cat npm-install.log; exit 1; }
  cat npm-install.log
  if grep -qi 'install-scripts\|install script' npm-install.log; then echo "npm warned about install scripts"; exit 1; fi
  [ ! -e node_modules/runlane/build ] || { echo "the install built the addon from source"; exit 1; }
  only_bundled node_modules/runlane/prebuilds/linux-x64/runlane.node \
    /cleanroom/app/node_modules/runlane/prebuilds/linux-x64/ "$GLIBC|^(libstdc[+][+]|libgcc_s)[.]so"
  cp /cleanroom/cleanroom_flow.cjs . && node cleanroom_flow.cjs
  ;;
esac
EOF
chmod 755 "$R/cleanroom/run.sh"

mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
CHROOT=$(command -v chroot)
in_root() { # what, then the chroot's command
  local what=$1; shift
  log "$what"
  env -i PATH=/opt/trap/bin:/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
    PIP_CERT=/cleanroom/host-ca.crt SSL_CERT_FILE=/cleanroom/host-ca.crt REQUESTS_CA_BUNDLE=/cleanroom/host-ca.crt \
    NODE_EXTRA_CA_CERTS=/cleanroom/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    npm_config_update_notifier=false RUNLANE_TEST_TIME_SCALE="$SCALE" \
    CR_REDIS_URL="$REDIS_URL" CR_REDIS_CA=/cleanroom/redis-ca.crt \
    CR_OPENAI_BASE_URL="http://127.0.0.1:$EMU_PORT/v1" \
    "$CHROOT" "$R" "$@"
}
rc=0
in_root "Python: pip install the wheel into a venv, then the flows" /cleanroom/run.sh python || rc=1
in_root "Node: npm install the tarball into a fresh app, then the flows" /cleanroom/run.sh node || rc=1
if [ -s "$R/cleanroom/compiler-calls.log" ]; then
  log "build tools were called in the clean room:"
  cat "$R/cleanroom/compiler-calls.log"
  rc=1
fi
[ "$rc" = 0 ] || die "see above"
log "PASS: the wheel and the npm tarball install and run (memory, Redis over TLS, responses) with no build tools"
