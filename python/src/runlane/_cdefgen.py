"""Turns ``runlane.h`` into a cffi cdef.

Used at build time (``build_native.py``) and by the test that checks the
compiled module against the header, so the declarations cannot drift from
the C ABI: nothing is copied by hand.

What it does, in order: joins continued lines, drops comments, keeps every
object-like ``#define RUNLANE_*`` whose value is an integer constant
expression as ``#define NAME ...`` (cffi's API mode reads the value from the
real header), drops every other preprocessor line, removes
``RUNLANE_BEGIN_DECL``/``RUNLANE_END_DECL`` and unwraps
``RUNLANE_EXTERN(type)`` into ``type``.
"""

from __future__ import annotations

import re
from typing import List

__all__ = ["header_to_cdef", "function_names"]

_DEFINE = re.compile(r"#\s*define\s+(RUNLANE_[A-Z0-9_]+)(?!\()\s+(.+)$")
# An integer constant expression made of literals, RUNLANE_ names, operators.
_INT_EXPR = re.compile(r"^[\sA-Za-z0-9_()+\-*/|&<>~^]+$")
_EXTERN = re.compile(r"RUNLANE_EXTERN\s*\(([^()]*)\)")
_DECL_MARKERS = re.compile(r"\bRUNLANE_(BEGIN|END)_DECL\b")


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def header_to_cdef(header_text: str) -> str:
    """Returns the cdef text for ``runlane.h``'s contents."""
    text = header_text.replace("\\\r\n", " ").replace("\\\n", " ")
    text = _strip_comments(text)
    out: List[str] = []
    seen_defines = set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            m = _DEFINE.match(stripped)
            if m and m.group(1) not in seen_defines:
                name, value = m.group(1), m.group(2).strip()
                if (
                    name not in ("RUNLANE_BEGIN_DECL", "RUNLANE_END_DECL")
                    and _INT_EXPR.match(value)
                    and not value.startswith("extern")
                ):
                    seen_defines.add(name)
                    out.append("#define %s ..." % name)
            continue
        line = _DECL_MARKERS.sub("", line)
        out.append(line.rstrip())
    cdef = "\n".join(out)
    cdef = _EXTERN.sub(lambda m: m.group(1).strip(), cdef)
    # Tidy: no blank lines (removed comments leave many).
    cdef = re.sub(r"\n\s*\n+", "\n", cdef).strip() + "\n"
    return cdef


def function_names(header_text: str) -> List[str]:
    """Every function the header exports (``RUNLANE_EXTERN(...) runlane_x``)."""
    text = _strip_comments(header_text)
    return re.findall(r"RUNLANE_EXTERN\s*\([^()]*\)\s*(runlane_[a-z0-9_]+)\s*\(", text)
