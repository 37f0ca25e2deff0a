#!/usr/bin/env python3
"""abi_dump.py - the ABI of librunlane as sorted, normalized text lines.

What counts (see tests/abi/README.md):
  func NAME: RET (PARAM TYPES)      every function of runlane.h (parameter
                                     names dropped, whitespace normalized)
  typedef NAME: DEFINITION          what each public typedef stands for
                                     (callback typedefs with their signature)
  enum TYPE.NAME = VALUE            every enumerator of the header's enums
  const NAME = VALUE                RUNLANE_FEATURE_*, RUNLANE_*_MAX and
                                     RUNLANE_VERSION_MAJOR (#define integers)
  symbol NAME@@VERSION              dynamic symbols the shared library exports
                                     (nm -D), with their symbol version

Usage:
  abi_dump.py --header runlane.h [--cc cc] [--lib librunlane.so] > abi.txt
  abi_dump.py --compare baseline.txt current.txt
      exit 0: compatible (additions are listed), 1: a break (removed or
      changed entries are listed), 2: usage or tool error.

Only the Python standard library; the preprocessor is the C compiler's
(`cc -E`), so macros such as RUNLANE_EXTERN are expanded the way a user's
compiler sees them.
"""
import argparse
import re
import subprocess
import sys

TOKEN_RE = re.compile(
    r"\s+|(?P<tok>\.\.\.|[A-Za-z_][A-Za-z0-9_]*|0[xX][0-9a-fA-F]+[uUlL]*|[0-9]+[uUlL]*"
    r"|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|<<|>>|[-+*/%&|^~!<>=(){}\[\],;:.?#])"
)

# Words that end a type (a parameter's last word that is one of these is not
# its name).
BUILTIN_TYPE_WORDS = {
    "void", "char", "short", "int", "long", "float", "double", "signed", "unsigned",
    "_Bool", "const", "volatile", "restrict", "struct", "enum", "union",
}
STD_TYPEDEFS = {
    "size_t", "ptrdiff_t", "wchar_t", "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t",
    "uint16_t", "uint32_t", "uint64_t", "intptr_t", "uintptr_t", "intmax_t", "uintmax_t",
}


def die(msg):
    sys.stderr.write("abi_dump: %s\n" % msg)
    sys.exit(2)


def tokenize(text):
    toks = []
    pos = 0
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m:
            die("cannot tokenize header near %r" % text[pos:pos + 40])
        if m.group("tok"):
            toks.append(m.group("tok"))
        pos = m.end()
    return toks


def header_text(cc, header):
    """The preprocessed text that comes from `header` itself (not from the
    system headers it includes)."""
    try:
        out = subprocess.run(cc + ["-E", "-x", "c", header], check=True, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        die("preprocessing %s failed: %s" % (header, getattr(e, "stderr", e)))
    keep, lines = False, []
    base = header.rsplit("/", 1)[-1]
    for line in out.splitlines():
        m = re.match(r'#\s*\d+\s+"([^"]*)"', line)
        if m:
            keep = m.group(1).rsplit("/", 1)[-1] == base
            continue
        if keep:
            lines.append(line)
    return "\n".join(lines)


def strip_attributes(toks):
    """Removes __attribute__((...)), __declspec(...) and `extern`."""
    out, i = [], 0
    while i < len(toks):
        t = toks[i]
        if t in ("__attribute__", "__declspec") and i + 1 < len(toks) and toks[i + 1] == "(":
            depth, j = 0, i + 1
            while j < len(toks):
                if toks[j] == "(":
                    depth += 1
                elif toks[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            i = j + 1
            continue
        if t in ("extern", "__extension__"):
            i += 1
            continue
        out.append(t)
        i += 1
    return out


def statements(toks):
    """Top-level declarations, split at ';' outside braces and parentheses."""
    stmts, cur, depth = [], [], 0
    for t in toks:
        if t in "({[" and len(t) == 1:
            depth += 1
        elif t in ")}]" and len(t) == 1:
            depth -= 1
        if t == ";" and depth == 0:
            if cur:
                stmts.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        stmts.append(cur)
    return stmts


def render(toks):
    s = " ".join(toks)
    s = re.sub(r"\* (?=\*)", "*", s)
    s = s.replace("( ", "(").replace(" )", ")").replace(" ,", ",").replace("[ ", "[").replace(" ]", "]")
    return s


def split_top(toks, sep=","):
    parts, cur, depth = [], [], 0
    for t in toks:
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
        if t == sep and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    parts.append(cur)
    return parts


def is_ident(t):
    return re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", t) is not None


def abstract_param(p, typenames):
    """A parameter's type without its name."""
    p = list(p)
    # Function pointer: RET ( * NAME ) ( ... )
    for k in range(len(p) - 2):
        if p[k] == "(" and p[k + 1] == "*" and is_ident(p[k + 2]) and k + 3 < len(p) and p[k + 3] == ")":
            del p[k + 2]
            break
    else:
        # Array parameter: drop the name before '['.
        if "[" in p:
            k = p.index("[")
            if k > 1 and is_ident(p[k - 1]) and p[k - 1] not in typenames and p[k - 1] not in BUILTIN_TYPE_WORDS:
                del p[k - 1]
        elif len(p) > 1 and is_ident(p[-1]) and p[-1] not in BUILTIN_TYPE_WORDS and p[-1] not in typenames \
                and p[-2] not in ("struct", "enum", "union"):
            p = p[:-1]
    return render(p)


def abstract_params(toks, typenames):
    if not toks:
        return "()"
    return "(" + ", ".join(abstract_param(p, typenames) for p in split_top(toks)) + ")"


def matching(toks, i):
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] == "(":
            depth += 1
        elif toks[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    die("unbalanced parentheses in %s" % render(toks))


def eval_int(expr_toks, known, what):
    s = []
    for t in expr_toks:
        if is_ident(t):
            if t not in known:
                die("%s: cannot evaluate %r" % (what, t))
            s.append("(%d)" % known[t])
        elif re.match(r"^(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*$", t):
            s.append(str(int(t.rstrip("uUlL"), 0)))
        elif t in ("+", "-", "*", "/", "%", "(", ")", "<<", ">>", "|", "&", "^", "~"):
            s.append("//" if t == "/" else t)
        else:
            die("%s: cannot evaluate %r" % (what, render(expr_toks)))
    try:
        return int(eval(" ".join(s), {"__builtins__": {}}, {}))  # noqa: S307 (digits and operators only)
    except Exception as e:  # pragma: no cover
        die("%s: cannot evaluate %r: %s" % (what, render(expr_toks), e))


def enum_entries(name, body, known):
    out, value = [], -1
    for item in split_top(body):
        if not item:
            continue
        ename = item[0]
        if len(item) > 2 and item[1] == "=":
            value = eval_int(item[2:], known, "enum %s.%s" % (name, ename))
        else:
            value += 1
        known[ename] = value
        out.append("enum %s.%s = %d" % (name, ename, value))
    return out


def parse_header(cc, header):
    toks = strip_attributes(tokenize(header_text(cc, header)))
    stmts = statements(toks)
    typenames = set(STD_TYPEDEFS)
    for st in stmts:
        if st and st[0] == "typedef":
            # The typedef name: the identifier before the parameter list of a
            # function pointer typedef, else the last identifier.
            if "(" in st and st[st.index("(") + 1:st.index("(") + 2] == ["*"]:
                typenames.add(st[st.index("(") + 2])
            else:
                typenames.add(st[-1])
    lines, known = [], {}
    for st in stmts:
        if st[0] == "typedef":
            body = st[1:]
            if body[0] in ("enum", "struct", "union"):
                kind = body[0]
                tag = body[1] if is_ident(body[1]) else ""
                if "{" in body:
                    lb = body.index("{")
                    rb = len(body) - 1 - body[::-1].index("}")
                    if kind == "enum":
                        lines += enum_entries(tag or body[-1], body[lb + 1:rb], known)
                    else:
                        lines.append("struct %s: %s" % (tag or body[-1], render(body[lb:rb + 1])))
                lines.append("typedef %s: %s %s" % (body[-1], kind, tag or "{...}"))
            elif "(" in body and body[body.index("(") + 1] == "*":
                k = body.index("(")
                name = body[k + 2]
                ret = render(body[:k])
                close = matching(body, k + 3 + 1) if body[k + 3] == ")" else die("bad typedef")
                params = body[k + 5:close] if body[k + 4] == "(" else die("bad typedef")
                lines.append("typedef %s: %s (*)%s" % (name, ret, abstract_params(params, typenames)))
            else:
                lines.append("typedef %s: %s" % (body[-1], render(body[:-1])))
        elif st[0] == "enum" and "{" in st:
            lb = st.index("{")
            rb = len(st) - 1 - st[::-1].index("}")
            lines += enum_entries(st[1] if is_ident(st[1]) else "(anonymous)", st[lb + 1:rb], known)
        elif "(" in st:
            k = st.index("(")
            name = st[k - 1]
            if not is_ident(name):
                die("cannot read the declaration %r" % render(st))
            close = matching(st, k)
            ret = render(st[:k - 1])
            lines.append("func %s: %s %s" % (name, ret, abstract_params(st[k + 1:close], typenames)))
        else:
            die("unexpected declaration in the header: %r" % render(st))
    return lines


def header_consts(cc, header):
    try:
        out = subprocess.run(cc + ["-dM", "-E", "-x", "c", header], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        die("cc -dM -E failed: %s" % getattr(e, "stderr", e))
    lines = []
    for line in out.splitlines():
        m = re.match(r"#define (RUNLANE_(?:FEATURE_[A-Z0-9_]+|[A-Z0-9_]+_MAX|VERSION_MAJOR))\s+(.*)$", line)
        if m:
            value = eval_int(tokenize(m.group(2)), {}, m.group(1))
            lines.append("const %s = %d" % (m.group(1), value))
    return lines


def lib_symbols(nm, lib):
    try:
        out = subprocess.run([nm, "-D", "--defined-only", "--with-symbol-versions", lib], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        die("nm failed on %s: %s" % (lib, getattr(e, "stderr", e)))
    lines = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBRVWiu" and not re.match(r"^RUNLANE_\d+$", parts[2]):
            lines.append("symbol %s" % parts[2])
    return lines


def key_of(line):
    """(kind, name) identifies an entry; the rest is its value."""
    if line.startswith("symbol "):
        return line.split("@", 1)[0], line
    if line.startswith(("enum ", "const ")):
        return line.split(" = ", 1)[0], line
    return line.split(": ", 1)[0], line


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def compare(base_path, cur_path):
    base = dict(key_of(l) for l in read_lines(base_path))
    cur = dict(key_of(l) for l in read_lines(cur_path))
    removed = [base[k] for k in sorted(base) if k not in cur]
    changed = [(base[k], cur[k]) for k in sorted(base) if k in cur and cur[k] != base[k]]
    added = [cur[k] for k in sorted(cur) if k not in base]
    for l in removed:
        print("ABI BREAK: removed: %s" % l)
    for b, c in changed:
        print("ABI BREAK: changed: %s\n                 now: %s" % (b, c))
    for l in added:
        print("added (compatible): %s" % l)
    if added and not removed and not changed:
        print("The ABI grew by %d entr%s: record it with tests/abi/update.sh (and commit "
              "tests/abi/baseline.txt)." % (len(added), "y" if len(added) == 1 else "ies"))
    if removed or changed:
        n = len(removed) + len(changed)
        print("%d removed or changed entr%s break%s the ABI promise of runlane.h (nothing may be "
              "removed or renumbered within a major version). If the break is intended (a new "
              "major version), bump RUNLANE_VERSION_MAJOR and run tests/abi/update.sh."
              % (n, "y" if n == 1 else "ies", "s" if n == 1 else ""))
        print("0 passed, 1 failed")
        return 1
    print("abi: %d baseline entries unchanged, %d added" % (len(base), len(added)))
    print("1 passed, 0 failed")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--header")
    ap.add_argument("--cc", default="cc", help="C compiler (may carry flags, split on spaces)")
    ap.add_argument("--lib", help="the shared library (librunlane.so) for its dynamic symbols")
    ap.add_argument("--nm", default="nm")
    ap.add_argument("--compare", nargs=2, metavar=("BASELINE", "CURRENT"))
    a = ap.parse_args()
    if a.compare:
        sys.exit(compare(*a.compare))
    if not a.header:
        die("--header is required")
    cc = a.cc.split()
    lines = parse_header(cc, a.header) + header_consts(cc, a.header)
    if a.lib:
        lines += lib_symbols(a.nm, a.lib)
    keys = [key_of(l)[0] for l in lines]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        die("entries declared twice: %s" % ", ".join(dups))
    sys.stdout.write("# librunlane ABI: functions, typedefs, enum values, constants and exported\n"
                     "# symbols of core/include/runlane.h and librunlane.so. Generated by\n"
                     "# tests/abi/update.sh; checked by the ctest test abi_check.\n")
    for l in sorted(lines):
        sys.stdout.write(l + "\n")


if __name__ == "__main__":
    main()
