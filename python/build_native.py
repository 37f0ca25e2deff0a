"""cffi builder of ``runlane._native`` (out-of-line API mode).

The cdef is generated from ``runlane.h`` at build time by
``src/runlane/_cdefgen.py``; nothing is declared by hand. setup.py copies the
core into ``vendor/`` before this runs and links the core's objects in.
"""

import importlib.util
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join(HERE, "vendor", "core")
HEADER = os.path.join(CORE, "include", "runlane.h")


def _load_cdefgen():
    path = os.path.join(HERE, "src", "runlane", "_cdefgen.py")
    spec = importlib.util.spec_from_file_location("_runlane_cdefgen", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dependencies():
    spec = importlib.util.spec_from_file_location(
        "_runlane_build_support", os.path.join(HERE, "build_support.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dependencies()


with open(HEADER, encoding="utf-8") as _f:
    _header = _f.read()

ffibuilder = FFI()
ffibuilder.cdef(_load_cdefgen().header_to_cdef(_header))

_inc, _libdirs, _libs, _defines = _dependencies()
ffibuilder.set_source(
    "runlane._native",
    '#include "runlane.h"\n',
    include_dirs=[os.path.join(CORE, "include")],
    library_dirs=_libdirs,
    libraries=_libs,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
