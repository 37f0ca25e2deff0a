"""The cffi declarations match runlane.h: generated from it at build time,
checked here against the header of this checkout and the compiled module."""

import os
import re

import pytest

import runlane
from runlane import _cdefgen
from runlane._native import ffi, lib

from conftest import HEADER


@pytest.fixture(scope="module")
def header_text():
    if not os.path.exists(HEADER):
        pytest.skip("core/include/runlane.h not found (not run from a checkout)")
    with open(HEADER, encoding="utf-8") as f:
        return f.read()


def test_installed_header_is_the_checkout_header(header_text):
    with open(os.path.join(runlane.get_include(), "runlane.h"), encoding="utf-8") as f:
        shipped = f.read()
    assert shipped == header_text, "the installed package was built from another runlane.h: reinstall ./python"


def test_every_header_function_is_in_the_module_with_its_signature(header_text):
    cdef = _cdefgen.header_to_cdef(header_text)
    names = _cdefgen.function_names(header_text)
    assert len(names) >= 40
    flat = " ".join(cdef.split())
    for name in names:
        assert hasattr(lib, name), "%s is declared in runlane.h but missing from runlane._native" % name
        m = re.search(r"([A-Za-z_][\w\s\*]*?)\b%s\s*\(([^)]*)\)\s*;" % name, flat)
        assert m, "cannot find the declaration of %s in the generated cdef" % name
        ret, params = m.group(1).strip(), m.group(2).strip()
        expected = ffi.typeof("%s(*)(%s)" % (ret, params))
        got = ffi.typeof(getattr(lib, name))
        assert got == expected, "%s: module has %s, header says %s" % (name, got, expected)


def test_enums_and_defines_match_the_header(header_text):
    text = re.sub(r"/\*.*?\*/", "", header_text, flags=re.S)
    for name, value in re.findall(r"\b(RUNLANE_(?:ERR|EVENT|STOP)_[A-Z_]+|RUNLANE_OK)\s*=\s*(-?\d+)", text):
        assert getattr(lib, name) == int(value), name
    for name, value in re.findall(r"#define (RUNLANE_[A-Z_]+) (\d+)\s", text):
        assert getattr(lib, name) == int(value), name
    for name, value in re.findall(r"#define (RUNLANE_FEATURE_[A-Z_]+) (0x[0-9a-fA-F]+)u", text):
        assert getattr(lib, name) == int(value, 16), name


def test_every_error_code_has_an_exception_class():
    from runlane.errors import error_class

    for code, name in ffi.typeof("runlane_err_t").elements.items():
        if code == 0:
            continue
        cls = error_class(code)
        assert cls is not runlane.RunlaneError, "no exception class for %s" % name
        assert cls.default_code == code


def test_cdef_generation_is_clean(header_text):
    cdef = _cdefgen.header_to_cdef(header_text)
    assert "RUNLANE_EXTERN" not in cdef
    assert "/*" not in cdef and "__cplusplus" not in cdef
    import cffi

    cffi.FFI().cdef(cdef)  # parses


def test_version_matches_the_header(header_text):
    major = re.search(r"#define RUNLANE_VERSION_MAJOR (\d+)", header_text).group(1)
    assert runlane.__version__.split(".")[0] == major
    assert runlane.version() == lib.RUNLANE_VERSION_NUM
