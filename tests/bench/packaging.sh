#!/usr/bin/env bash
# Packaging benchmark (not a test): how big the distributables are and how
# long they take to install and load. Builds them with scripts/package.sh
# (timed) unless a directory with them is given; then, RUNS times each (the
# median is reported), on this machine:
#   - `pip install` of the wheel into a fresh venv (cffi comes from the
#     registry or pip's cache), and the first `import runlane` + features();
#   - `npm install` of the tarball into a fresh app (its dependencies from
#     the registry or npm's cache), and the first require('runlane') + features().
# Sizes: the files, and what they take once installed. The budget is ~10 MB
# for the wheel and the tarball each: over it the script exits 1.
#   tests/bench/packaging.sh [--write] [DIST_DIR]
# --write also puts the table into tests/bench/RESULTS.md (between the
# packaging:begin / packaging:end markers), with the machine and the command.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WRITE=0
if [ "${1:-}" = --write ]; then WRITE=1; shift; fi
RUNS=${RUNS:-3}
BUDGET=$((10 * 1024 * 1024))
T=$(mktemp -d "${TMPDIR:-/tmp}/runlane-bench-pkg.XXXXXX")
trap 'rm -rf "$T"' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b - a}'; }
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
kb() { echo $(( $1 / 1024 )); }

if [ -n "${1:-}" ]; then
  DIST=$(cd "$1" && pwd)
  BUILD_S="not measured (given: $1)"
else
  DIST=$ROOT/build/bench-dist
  t0=$(now)
  "$ROOT/scripts/package.sh" "$DIST" >"$T/package.log" 2>&1 || { cat "$T/package.log"; exit 1; }
  BUILD_S="$(secs "$t0" "$(now)") s"
fi
WHEEL=$(ls "$DIST"/runlane-*-manylinux*.whl | tail -1)
SDIST=$(ls "$DIST"/runlane-*.tar.gz | tail -1)
TGZ=$(ls "$DIST"/runlane-*.tgz | tail -1)

py_install=() py_import=() node_install=() node_require=()
for i in $(seq "$RUNS"); do
  python3 -m venv "$T/venv$i"
  t0=$(now)
  "$T/venv$i/bin/pip" install -q --disable-pip-version-check "$WHEEL"
  py_install+=("$(secs "$t0" "$(now)")")
  t0=$(now)
  (cd "$T" && "$T/venv$i/bin/python" -c 'import runlane; runlane.features()')
  py_import+=("$(secs "$t0" "$(now)")")

  mkdir -p "$T/app$i"
  echo '{ "name": "bench-app", "version": "0.0.0", "private": true }' >"$T/app$i/package.json"
  t0=$(now)
  (cd "$T/app$i" && npm install --no-audit --no-fund --loglevel=error "$TGZ" >/dev/null)
  node_install+=("$(secs "$t0" "$(now)")")
  t0=$(now)
  (cd "$T/app$i" && node -e 'require("runlane").features()')
  node_require+=("$(secs "$t0" "$(now)")")
done
SITE=$(ls -d "$T"/venv1/lib/python3*/site-packages)
py_size=$(du -sk "$SITE/runlane" "$SITE/runlane.libs" | awk '{s+=$1} END{print s}')
node_size=$(du -sk "$T/app1/node_modules/runlane" | cut -f1)
node_all=$(du -sk "$T/app1/node_modules" | cut -f1)
node_pkgs=$(cd "$T/app1" && npm ls --all --parseable 2>/dev/null | tail -n +3 | wc -l)  # minus the app and runlane
wheel_b=$(stat -c %s "$WHEEL"); tgz_b=$(stat -c %s "$TGZ")

report() {
  echo "## Packaging: sizes and install times ($(date -u +%Y-%m-%d), $(nproc) cores, median of $RUNS)"
  echo
  echo "| artifact | file | installed | install time | first load |"
  echo "|---|---|---|---|---|"
  echo "| wheel \`$(basename "$WHEEL")\` | $(kb "$wheel_b") KB | $py_size KB (runlane + runlane.libs) | $(printf '%s\n' "${py_install[@]}" | median) s (\`pip install\`, with cffi) | $(printf '%s\n' "${py_import[@]}" | median) s (\`import runlane\`) |"
  echo "| sdist \`$(basename "$SDIST")\` | $(kb "$(stat -c %s "$SDIST")") KB | builds from source | - | - |"
  echo "| npm \`$(basename "$TGZ")\` | $(kb "$tgz_b") KB | $node_size KB (node_modules/runlane; $node_all KB with its $node_pkgs dependency packages) | $(printf '%s\n' "${node_install[@]}" | median) s (\`npm install\`) | $(printf '%s\n' "${node_require[@]}" | median) s (\`require('runlane')\`) |"
  echo
  echo "Build of all three by \`scripts/package.sh\`: $BUILD_S. Install times include fetching the"
  echo "dependencies (cffi; cmake-js and the others) from the registries or the local caches."
}
report
if [ $WRITE = 1 ]; then
  {
    echo "- Command: \`tests/bench/packaging.sh --write${1:+ $1}\`"
    echo "- Machine: $(nproc) cores (\`nproc\`), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory; $(uname -sr); Python $(python3 -c 'import platform; print(platform.python_version())'), Node $(node --version), npm $(npm --version)"
    echo "- Load average when it ran: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    report | sed 's/^## /### /'
  } >"$T/section.md"
  python3 - "$ROOT/tests/bench/RESULTS.md" "$T/section.md" <<'PY'
import sys
path, sec = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
b, e = "<!-- packaging:begin -->", "<!-- packaging:end -->"
if b in text and e in text:
    text = text[:text.index(b) + len(b)] + "\n" + sec + text[text.index(e):]
else:
    text = (text.rstrip("\n") + "\n\n## Packaging: sizes and install times\n\n"
            "`tests/bench/packaging.sh --write` (scripts/package.sh, then fresh installs).\n\n" + b + "\n" + sec + e + "\n")
open(path, "w").write(text)
PY
  echo "wrote tests/bench/RESULTS.md"
fi
over=0
for f in "$WHEEL" "$TGZ"; do
  if [ "$(stat -c %s "$f")" -gt "$BUDGET" ]; then echo "OVER the ~10 MB budget: $(basename "$f")"; over=1; fi
done
exit $over
