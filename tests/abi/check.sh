#!/usr/bin/env bash
# ABI check (ctest: abi_check): the ABI of the built library against the
# baseline kept in the repository. Fails when an entry of the baseline was
# removed or changed (function signature, typedef, enum value, constant,
# exported symbol or its version); additions pass and are listed (record
# them with tests/abi/update.sh). See tests/abi/README.md.
#
#   tests/abi/check.sh LIB [CC] [PYTHON]
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB=${1:?usage: check.sh path/to/librunlane.so [cc] [python3]}
CC=${2:-cc}
PY=${3:-python3}
HDR="$ROOT/core/include/runlane.h"
OUT=$(mktemp -d /tmp/runlane-abi.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

"$PY" "$HERE/abi_dump.py" --header "$HDR" --cc "$CC" --lib "$LIB" >"$OUT/current.txt" || {
  echo "abi_dump failed"; echo "0 passed, 1 failed"; exit 1; }
"$PY" "$HERE/abi_dump.py" --compare "$HERE/baseline.txt" "$OUT/current.txt"
rc=$?

# Second opinion from libabigail (the types as compiled, from DWARF), when
# abidiff is installed and the library has debug info: a removed function or
# an incompatible type change fails; added functions are fine.
if [ $rc = 0 ] && command -v abidiff >/dev/null 2>&1 && [ -f "$HERE/baseline.abi" ] \
   && readelf -S "$LIB" 2>/dev/null | grep -q '\.debug_info'; then
  abidiff --headers-dir2 "$ROOT/core/include" "$HERE/baseline.abi" "$LIB" >"$OUT/abidiff.txt" 2>&1
  arc=$?
  if [ $((arc & 1)) != 0 ] || [ $((arc & 8)) != 0 ]; then
    echo "abidiff (exit $arc) reports an incompatible change against tests/abi/baseline.abi:"
    cat "$OUT/abidiff.txt"
    echo "0 passed, 1 failed"
    rc=1
  elif [ $((arc & 4)) != 0 ]; then
    echo "abidiff: compatible changes (additions) against tests/abi/baseline.abi:"
    grep -E '^\s*\[A\]|summary' "$OUT/abidiff.txt" || true
  else
    echo "abidiff: no change against tests/abi/baseline.abi"
  fi
fi
exit $rc
