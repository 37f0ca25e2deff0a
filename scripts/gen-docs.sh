#!/usr/bin/env bash
# Regenerates the README's configuration reference from the property table.
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
