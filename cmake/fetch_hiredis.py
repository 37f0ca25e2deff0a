#!/usr/bin/env python3
"""Fetches the pinned hiredis C source (hiredis 1.x with TLS) into a cache.

Debian 12 ships hiredis 0.14 (no TLS). The `hiredis` source distribution of
the Python package index carries a full hiredis 1.x C source in
vendor/hiredis/ (ssl.c included); it is fetched with pip (pinned version,
sha256 checked by pip and again here), and only vendor/hiredis is extracted.

    fetch_hiredis.py [--cache DIR]   -> prints the directory that holds hiredis/

The printed directory D has D/hiredis/{hiredis.c,...,ssl.c,COPYING}, so that
`-I D` serves `#include <hiredis/hiredis.h>`.

Cache: --cache, else $RUNLANE_DEPS_CACHE, else <repository>/build/deps. A
cache that already holds the verified source is used without any network.
pip: the running Python's (`python -m pip`), else $RUNLANE_PIP, else pip3/pip
on PATH. Also importable (build_support.py calls fetch()).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

PKG = "hiredis"
VERSION = "3.5.0"  # the Python package; it vendors hiredis 1.5.0
SDIST = "hiredis-%s.tar.gz" % VERSION
SHA256 = "c227592cc56b7df247abe4755c26723965be68972be2149fa441ac33d82131ba"
MEMBER_PREFIX = "hiredis-%s/vendor/hiredis/" % VERSION
# What a build needs (dict.c is #included by async.c; test.c is not built).
FILES = (
    "COPYING", "alloc.c", "alloc.h", "async.c", "async.h", "async_private.h", "dict.c",
    "dict.h", "ffc.h", "fmacros.h", "hiredis.c", "hiredis.h", "hiredis_ssl.h", "net.c", "net.h",
    "read.c", "read.h", "sds.c", "sds.h", "sdsalloc.h", "sockcompat.c", "sockcompat.h",
    "ssl.c", "win32.h",
)
SOURCES = ("alloc.c", "async.c", "hiredis.c", "net.c", "read.c", "sds.c", "sockcompat.c")
SSL_SOURCES = ("ssl.c",)

HERE = os.path.dirname(os.path.abspath(__file__))


def default_cache():
    env = os.environ.get("RUNLANE_DEPS_CACHE")
    if env:
        return os.path.abspath(env)
    return os.path.join(os.path.dirname(HERE), "build", "deps")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip():
    try:
        import pip  # noqa: F401

        return [sys.executable, "-m", "pip"]
    except ImportError:
        pass
    if os.environ.get("RUNLANE_PIP"):
        return [os.environ["RUNLANE_PIP"]]
    for name in ("pip3", "pip"):
        path = shutil.which(name)
        if path:
            return [path]
    sys.exit(
        "runlane: pip is needed once to fetch the pinned hiredis source (%s==%s); "
        "install pip, set RUNLANE_PIP, or point RUNLANE_HIREDIS_SOURCE_DIR at an "
        "extracted hiredis >= 1.0 source" % (PKG, VERSION)
    )


def _download(cache):
    """The verified sdist in the cache (downloaded when missing or wrong)."""
    tarball = os.path.join(cache, SDIST)
    if os.path.isfile(tarball) and _sha256(tarball) == SHA256:
        return tarball
    tmp = tempfile.mkdtemp(prefix=".dl-", dir=cache)
    try:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write("%s==%s --hash=sha256:%s\n" % (PKG, VERSION, SHA256))
        cmd = _pip() + [
            "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
            "--disable-pip-version-check", "-q", "-r", req, "-d", tmp,
        ]
        print("runlane: fetching %s==%s (hiredis C source) with pip" % (PKG, VERSION),
              file=sys.stderr)
        if subprocess.call(cmd, stdout=sys.stderr) != 0:
            sys.exit("runlane: `%s` failed" % " ".join(cmd))
        got = os.path.join(tmp, SDIST)
        if not os.path.isfile(got):
            sys.exit("runlane: pip did not produce %s" % SDIST)
        digest = _sha256(got)
        if digest != SHA256:
            sys.exit("runlane: %s has sha256 %s, expected %s: refusing it" % (SDIST, digest, SHA256))
        os.replace(got, tarball)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tarball


def fetch(cache=None):
    """Returns the directory that holds hiredis/ (see the module doc)."""
    cache = os.path.abspath(cache or default_cache())
    out = os.path.join(cache, "hiredis-py-%s" % VERSION)
    stamp = os.path.join(out, ".sha256")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if f.read().strip() == SHA256 and all(
                os.path.isfile(os.path.join(out, "hiredis", n)) for n in FILES
            ):
                return out
    os.makedirs(cache, exist_ok=True)
    tarball = _download(cache)
    tmp = tempfile.mkdtemp(prefix=".x-", dir=cache)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared
    try:
        dest = os.path.join(tmp, "hiredis")
        os.makedirs(dest)
        wanted = {MEMBER_PREFIX + n: n for n in FILES}
        with tarfile.open(tarball, "r:gz") as tf:
            for m in tf.getmembers():
                name = wanted.pop(m.name, None)
                if name is None:
                    continue
                if not m.isfile():
                    sys.exit("runlane: %s: %s is not a regular file" % (SDIST, m.name))
                with tf.extractfile(m) as src, open(os.path.join(dest, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if wanted:
            sys.exit("runlane: %s lacks %s" % (SDIST, ", ".join(sorted(wanted))))
        with open(os.path.join(tmp, ".sha256"), "w") as f:
            f.write(SHA256 + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv):
    cache = None
    if len(argv) == 2 and argv[0] == "--cache":
        cache = argv[1]
    elif argv:
        sys.exit("usage: fetch_hiredis.py [--cache DIR]")
    print(fetch(cache))


if __name__ == "__main__":
    main(sys.argv[1:])
