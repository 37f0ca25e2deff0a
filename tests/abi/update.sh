#!/usr/bin/env bash
# Records the current ABI as the baseline: tests/abi/baseline.txt (always)
# and tests/abi/baseline.abi (libabigail's abidw, when installed). Run it
# after adding functions, enum values or constants to runlane.h, review the
# diff (it must only add lines) and commit both files.
#
#   tests/abi/update.sh [BUILD_DIR]    (default: build/default; built if needed)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$ROOT/build/default}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja >/dev/null
fi
cmake --build "$BUILD" --target runlane >/dev/null
LIB=$(ls "$BUILD"/core/librunlane.so.*.*.* 2>/dev/null | head -1)
[ -n "$LIB" ] || LIB="$BUILD/core/librunlane.so"
python3 "$HERE/abi_dump.py" --header "$ROOT/core/include/runlane.h" --lib "$LIB" >"$HERE/baseline.txt"
echo "wrote tests/abi/baseline.txt ($(grep -vc '^#' "$HERE/baseline.txt") entries)"
if command -v abidw >/dev/null 2>&1; then
  if readelf -S "$LIB" | grep -q '\.debug_info'; then
    abidw --headers-dir "$ROOT/core/include" --drop-private-types --no-corpus-path \
          --no-comp-dir-path --no-show-locs "$LIB" >"$HERE/baseline.abi"
    echo "wrote tests/abi/baseline.abi"
  else
    echo "note: $LIB has no debug info; tests/abi/baseline.abi not updated" >&2
  fi
else
  echo "note: abidw (Debian: abigail-tools) not installed; tests/abi/baseline.abi not updated" >&2
fi
git -C "$ROOT" --no-pager diff --stat -- tests/abi/ 2>/dev/null || true
