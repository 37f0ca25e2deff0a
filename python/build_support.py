"""Build helpers shared by setup.py and build_native.py (not installed).

Finds and vendors the C core, embeds its Lua scripts, finds the system
libraries. See setup.py for where the core comes from.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENDOR = os.path.join(HERE, "vendor")
VENDOR_CORE = os.path.join(VENDOR, "core")


def _is_core(path):
    return os.path.isfile(os.path.join(path, "include", "runlane.h")) and os.path.isdir(
        os.path.join(path, "src")
    )


def vendor_core():
    """Refreshes vendor/ from the checkout (or $RUNLANE_CORE_DIR) when present."""
    src = os.environ.get("RUNLANE_CORE_DIR") or os.path.join(HERE, "..", "core")
    src = os.path.abspath(src)
    if not _is_core(src):
        if _is_core(VENDOR_CORE):
            return
        sys.exit(
            "runlane: the C core was not found: expected ../core (a repository checkout), "
            "vendor/core (an sdist) or $RUNLANE_CORE_DIR"
        )
    tmp = "%s.tmp-%d" % (VENDOR, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("src", "include", "lua"):
        if os.path.isdir(os.path.join(src, sub)):
            shutil.copytree(os.path.join(src, sub), os.path.join(tmp, "core", sub))
    embed = os.path.join(src, "..", "cmake", "EmbedLua.cmake")
    if os.path.isfile(embed):
        os.makedirs(os.path.join(tmp, "cmake"))
        shutil.copy2(embed, os.path.join(tmp, "cmake", "EmbedLua.cmake"))
    old = "%s.old-%d" % (VENDOR, os.getpid())
    if os.path.isdir(VENDOR):
        os.rename(VENDOR, old)
    os.rename(tmp, VENDOR)
    shutil.rmtree(old, ignore_errors=True)


def header_version():
    with open(os.path.join(VENDOR_CORE, "include", "runlane.h"), encoding="utf-8") as f:
        text = f.read()
    parts = []
    for what in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(r"#define RUNLANE_VERSION_%s (\d+)" % what, text)
        parts.append(m.group(1) if m else "0")
    return ".".join(parts)


# ---- Lua embedding (same output as cmake/EmbedLua.cmake) ----

_INCLUDE = re.compile(r'--@include "([^"]+)"')


def _c_string(src):
    src = src.replace("\\", "\\\\").replace('"', '\\"')
    # "??" could start a trigraph under -std=c11.
    src = src.replace("?", "\\?")
    return src.replace("\n", '\\n"\n"')


def embed_lua(lua_dir, out_path):
    scripts = sorted(glob.glob(os.path.join(lua_dir, "*.lua")))
    body = [
        "/* Generated from core/lua by the Python package's setup.py (the same table as\n"
        " * cmake/EmbedLua.cmake). Do not edit. */\n#include \"lua_scripts.h\"\n\n"
    ]
    table = ["const rl_lua_script_t rl_lua_scripts[] = {\n"]
    for path in scripts:
        fname = os.path.splitext(os.path.basename(path))[0]
        m = re.match(r"^(.+)-([0-9]+)$", fname)
        if not m:
            raise SystemExit("Lua script %s must be named <name>-<numkeys>.lua" % path)
        name, numkeys = m.group(1), int(m.group(2))
        with open(path, encoding="utf-8", newline="") as f:
            src = f.read()

        def include(match):
            inc = os.path.join(lua_dir, "includes", match.group(1))
            if not os.path.isfile(inc):
                raise SystemExit("%s: include %s not found" % (path, match.group(1)))
            with open(inc, encoding="utf-8", newline="") as f:
                return f.read()

        src = _INCLUDE.sub(include, src)
        cname = re.sub(r"[^A-Za-z0-9_]", "_", name)
        body.append('static const char lua_%s[] =\n"%s";\n\n' % (cname, _c_string(src)))
        table.append('    {"%s", %d, lua_%s},\n' % (name, numkeys, cname))
    table.append("};\nconst size_t rl_lua_scripts_count = %d;\n" % len(scripts))
    text = "".join(body) + "".join(table)
    old = None
    if os.path.exists(out_path):
        with open(out_path, encoding="utf-8") as f:
            old = f.read()
    if old != text:
        with open(out_path, "w", encoding="utf-8") as f:
            f.write(text)


# ---- system libraries ----


def pkg_config(*args):
    try:
        out = subprocess.run(
            ["pkg-config"] + list(args), check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split()


def dependencies():
    """include_dirs, library_dirs, libraries, defines for hiredis/cJSON/curl."""
    inc, libdirs, libs, defines = [], [], [], []
    mods = ["hiredis", "libcjson", "libcurl"]
    ssl = pkg_config("--exists", "hiredis_ssl") is not None
    if ssl:
        mods.append("hiredis_ssl")
        defines.append(("RUNLANE_HAVE_HIREDIS_SSL", "1"))
    cflags = pkg_config("--cflags", *mods)
    ldflags = pkg_config("--libs", *mods)
    if cflags is None or ldflags is None:
        # No pkg-config (or a .pc missing): the usual names and places.
        libs = ["hiredis", "cjson", "curl"]
        inc = ["/usr/include/hiredis", "/usr/include/cjson"]
    else:
        for flag in cflags:
            if flag.startswith("-I"):
                inc.append(flag[2:])
        for flag in ldflags:
            if flag.startswith("-L"):
                libdirs.append(flag[2:])
            elif flag.startswith("-l"):
                libs.append(flag[2:])
    for extra in ("pthread", "m"):
        if extra not in libs:
            libs.append(extra)
    return inc, libdirs, libs, defines
