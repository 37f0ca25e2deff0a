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
# vendor/hiredis/hiredis/*.c: the pinned hiredis 1.x source (with ssl.c),
# copied from cmake/fetch_hiredis.py's cache by vendor_core() so that an
# sdist carries it and builds without the network.
VENDOR_HIREDIS = os.path.join(VENDOR, "hiredis")


def _load_fetch_hiredis():
    """cmake/fetch_hiredis.py of the checkout, or None (an sdist)."""
    path = os.path.join(HERE, "..", "cmake", "fetch_hiredis.py")
    if not os.path.isfile(path):
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("_runlane_fetch_hiredis", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _hiredis_source():
    """Directory holding hiredis/ (pinned, verified), or None."""
    env = os.environ.get("RUNLANE_HIREDIS_SOURCE_DIR")
    if env:
        return os.path.abspath(env)
    fh = _load_fetch_hiredis()
    return fh.fetch() if fh else None


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
    for sub in ("src", "include", "lua", "dashboard"):
        if os.path.isdir(os.path.join(src, sub)):
            shutil.copytree(os.path.join(src, sub), os.path.join(tmp, "core", sub))
    if not system_hiredis():
        hsrc = _hiredis_source()
        if hsrc is None:
            if os.path.isfile(os.path.join(VENDOR_HIREDIS, "hiredis", "ssl.c")):
                shutil.copytree(VENDOR_HIREDIS, os.path.join(tmp, "hiredis"))
            else:
                sys.exit("runlane: no hiredis source: expected ../cmake/fetch_hiredis.py, "
                         "vendor/hiredis or $RUNLANE_HIREDIS_SOURCE_DIR")
        else:
            shutil.copytree(os.path.join(hsrc, "hiredis"), os.path.join(tmp, "hiredis", "hiredis"))
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


# ---- a file as a C byte array (the same symbols as cmake/EmbedFile.cmake) ----


def embed_file(in_path, out_path, name):
    """Writes out_path defining ``const unsigned char name[]`` (NUL-terminated)
    and ``const size_t name_len``: the dashboard page the core serves."""
    with open(in_path, "rb") as f:
        data = f.read()
    rows = [
        "".join("0x%02x," % b for b in data[i : i + 16]) for i in range(0, len(data), 16)
    ]
    text = (
        "/* Generated from %s by the Python package's setup.py. Do not edit. */\n"
        "#include <stddef.h>\nextern const unsigned char %s[];\nextern const size_t %s_len;\n"
        "const unsigned char %s[] = {\n%s\n0x00};\nconst size_t %s_len = %d;\n"
        % (os.path.basename(in_path), name, name, name, "\n".join(rows), name, len(data))
    )
    old = None
    if os.path.exists(out_path):
        with open(out_path, encoding="utf-8") as f:
            old = f.read()
    if old != text:
        with open(out_path, "w", encoding="utf-8") as f:
            f.write(text)


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


def system_hiredis():
    """RUNLANE_SYSTEM_HIREDIS=1: link the system's hiredis (>= 1.0, hiredis_ssl)."""
    return os.environ.get("RUNLANE_SYSTEM_HIREDIS", "") in ("1", "ON", "on", "true")


def hiredis_sources():
    """The pinned hiredis 1.x C sources vendored by vendor_core() (hiredis + ssl)."""
    fh = _load_fetch_hiredis()
    names = list(fh.SOURCES) + list(fh.SSL_SOURCES) if fh else [
        "alloc.c", "async.c", "hiredis.c", "net.c", "read.c", "sds.c", "sockcompat.c", "ssl.c"
    ]
    return [os.path.join(VENDOR_HIREDIS, "hiredis", n) for n in names]


def dependencies():
    """include_dirs, library_dirs, libraries, defines for hiredis/cJSON/curl/OpenSSL.

    hiredis >= 1.0 with TLS: by default the pinned source in vendor/hiredis,
    compiled into the extension (setup.py); the system's with
    RUNLANE_SYSTEM_HIREDIS=1."""
    inc, libdirs, libs = [], [], []
    defines = [("RUNLANE_HAVE_HIREDIS_SSL", "1")]
    mods = ["libcjson", "libcurl", "libssl", "libcrypto"]
    if system_hiredis():
        mods = ["hiredis_ssl", "hiredis"] + mods
        if pkg_config("--atleast-version=1.0", "hiredis") is None or pkg_config(
            "--exists", "hiredis_ssl"
        ) is None:
            sys.exit("runlane: RUNLANE_SYSTEM_HIREDIS=1 needs hiredis >= 1.0 with hiredis_ssl")
    else:
        inc.append(VENDOR_HIREDIS)
    cflags = pkg_config("--cflags", *mods)
    ldflags = pkg_config("--libs", *mods)
    if cflags is None or ldflags is None:
        # No pkg-config (or a .pc missing): the usual names and places.
        libs = (["hiredis_ssl", "hiredis"] if system_hiredis() else []) + [
            "cjson", "curl", "ssl", "crypto"
        ]
        inc += ["/usr/include/cjson"]
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
