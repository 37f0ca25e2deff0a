"""Build of the runlane Python package.

The C core is compiled from source into the cffi extension ``runlane._native``
(statically: the wheel carries the core and hiredis 1.x with TLS, built from
the pinned source in ``vendor/hiredis``; ``import runlane`` needs the system
libraries cJSON, libcurl and OpenSSL). RUNLANE_SYSTEM_HIREDIS=1 links the
system's hiredis (>= 1.0, with hiredis_ssl) instead.

Where the core comes from, first match wins:
1. ``$RUNLANE_CORE_DIR`` (a directory holding ``src/``, ``include/``, ``lua/``);
2. ``../core`` next to this directory (a checkout of the repository);
3. ``vendor/core`` (an sdist: the copy made by 1. or 2. when the sdist was built).
In cases 1 and 2 the core is copied into ``vendor/`` first, so an sdist built
from a checkout carries it.

The Lua scripts of the redis store are embedded here in Python, producing the
same table as ``cmake/EmbedLua.cmake`` (declared in ``core/src/lua_scripts.h``),
so no CMake is needed.
"""

import glob
import importlib.util
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_support():
    spec = importlib.util.spec_from_file_location(
        "_runlane_build_support", os.path.join(HERE, "build_support.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


support = _load_support()
VENDOR_CORE = support.VENDOR_CORE


class build_ext_with_core(build_ext):
    """Compiles the C core with its own flags, links it into runlane._native."""

    def build_extension(self, ext):
        if ext.name == "runlane._native":
            self._add_core(ext)
        super().build_extension(ext)
        if ext.name == "runlane._native":
            # Ship the header beside the module (runlane.get_include()).
            pkgdir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(os.path.join(pkgdir, "include"), exist_ok=True)
            shutil.copy2(
                os.path.join(VENDOR_CORE, "include", "runlane.h"),
                os.path.join(pkgdir, "include", "runlane.h"),
            )

    def _add_core(self, ext):
        gen_dir = os.path.join(self.build_temp, "runlane_core_gen")
        os.makedirs(gen_dir, exist_ok=True)
        lua_c = os.path.join(gen_dir, "lua_scripts.c")
        support.embed_lua(os.path.join(VENDOR_CORE, "lua"), lua_c)
        page_c = os.path.join(gen_dir, "dashboard_html.c")
        support.embed_file(
            os.path.join(VENDOR_CORE, "dashboard", "index.html"), page_c, "rl_dashboard_html"
        )
        sources = sorted(glob.glob(os.path.join(VENDOR_CORE, "src", "*.c"))) + [lua_c, page_c]
        inc, _libdirs, _libs, defines = support.dependencies()
        objects = self.compiler.compile(
            sources,
            output_dir=os.path.join(self.build_temp, "runlane_core"),
            macros=[("_GNU_SOURCE", None)] + defines,
            include_dirs=[os.path.join(VENDOR_CORE, "include"), os.path.join(VENDOR_CORE, "src")]
            + inc,
            extra_postargs=["-std=c11", "-fvisibility=hidden", "-fPIC", "-Wall"],
            debug=self.debug,
            depends=glob.glob(os.path.join(VENDOR_CORE, "src", "*.h")),
        )
        if not support.system_hiredis():
            # hiredis with its own flags (none of the core's warnings).
            objects += self.compiler.compile(
                support.hiredis_sources(),
                output_dir=os.path.join(self.build_temp, "runlane_hiredis"),
                include_dirs=[support.VENDOR_HIREDIS],
                extra_postargs=["-std=c11", "-fvisibility=hidden", "-fPIC", "-w"],
                debug=self.debug,
            )
        ext.extra_objects = list(objects) + list(ext.extra_objects or [])
        if sys.platform.startswith("linux"):
            # Export only the module's init function: the core's runlane_*
            # symbols stay private to this extension.
            mapfile = os.path.join(gen_dir, "native.map")
            with open(mapfile, "w") as f:
                f.write("{\n  global:\n    PyInit__native;\n  local:\n    *;\n};\n")
            ext.extra_link_args = list(ext.extra_link_args or []) + [
                "-Wl,--version-script=" + mapfile
            ]
        # The core's sources changed: relink.
        ext.depends = list(ext.depends or []) + sources


support.vendor_core()

setup(
    version=support.header_version(),
    cffi_modules=["build_native.py:ffibuilder"],
    cmdclass={"build_ext": build_ext_with_core},
    # cffi compiles against the stable ABI: one wheel serves CPython >= 3.9.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
