"""Reads a valgrind log; prints and counts the error reports whose stack
passes through runlane (the _native module, librunlane, the addon): the
interpreter's own reports (CPython's int-from-bytes, V8's JIT) are not
ours to fix and are left out. Exit status 1 when any report is ours."""
import re
import sys

OURS = re.compile(r"_native|runlane|/core/src/|event_bridge|\b(store_\w+|worker|client|http|sse|backend_\w+|conf|events|util)\.c:")
blocks, cur = [], []
for line in open(sys.argv[1], errors="replace"):
    if re.match(r"==\d+== \S", line) and not re.match(r"==\d+==\s+(at|by) ", line) and cur:
        blocks.append(cur)
        cur = []
    if re.match(r"==\d+==", line):
        cur.append(line.rstrip("\n"))
if cur:
    blocks.append(cur)
reports = [b for b in blocks if b and re.search(r"Invalid|uninitialised|Mismatched|free\(\)|overlap|definitely lost", b[0])]
ours = [b for b in reports if any(OURS.search(l) for l in b)]
for b in ours:
    print("\n".join(b))
print("valgrind: %d reports, %d through runlane" % (len(reports), len(ours)))
sys.exit(1 if ours else 0)
