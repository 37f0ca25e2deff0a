#!/usr/bin/env bash
# Regenerates the README's configuration reference (and the Python package's
# typed options, python/src/runlane/_options.py) from the property table.
#   scripts/gen-docs.sh [path/to/runlane]        rewrite README.md
#   scripts/gen-docs.sh --check [path/to/runlane] exit 1 when README.md is stale
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
BIN=${1:-$ROOT/build/default/core/cli/runlane}
table=$("$BIN" config --markdown)
new=$(TABLE="$table" python3 - "$ROOT/README.md" <<'PY'
import os, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
block = "<!-- config:begin -->\n" + os.environ["TABLE"].rstrip("\n") + "\n<!-- config:end -->"
print(re.sub(r"<!-- config:begin -->.*?<!-- config:end -->", lambda m: block, text, flags=re.S), end="")
PY
)
if [ $check = 1 ]; then
  if [ "$new" != "$(cat "$ROOT/README.md")" ]; then
    echo "README.md configuration reference is stale: run scripts/gen-docs.sh"; echo "0 passed, 1 failed"; exit 1
  fi
  echo "1 passed, 0 failed"; exit 0
fi
printf '%s' "$new" > "$ROOT/README.md"
# The Python package's typed options come from the same table (a test checks
# the committed file): rebuilt from the package as installed from this tree.
VPY=${RUNLANE_VENV:-$ROOT/build/venv}/bin/python
if [ -x "$VPY" ]; then
  "$VPY" -m pip install -q --disable-pip-version-check "$ROOT/python"
  (cd / && "$VPY" -m runlane._optionsgen) > "$ROOT/build/_options.py.new"
  mv "$ROOT/build/_options.py.new" "$ROOT/python/src/runlane/_options.py"
else
  echo "gen-docs: no venv at ${VPY%/bin/python}: python/src/runlane/_options.py not regenerated (RUNLANE_VENV=... scripts/deps.sh makes one)"
fi
