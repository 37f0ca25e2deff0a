"""The Python build embeds the Lua scripts exactly as cmake/EmbedLua.cmake does."""

import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO


def load_support():
    path = os.path.join(REPO, "python", "build_support.py")
    if not os.path.exists(path):
        pytest.skip("not run from a checkout")
    spec = importlib.util.spec_from_file_location("runlane_build_support", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_scripts(c_text):
    """{name: (numkeys, source)} from a generated lua_scripts.c."""
    literals = {}
    for m in re.finditer(r"static const char (lua_\w+)\[\] =\n(.*?);\n", c_text, flags=re.S):
        pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))
        raw = "".join(pieces)
        literals[m.group(1)] = re.sub(
            r"\\(.)", lambda e: {"n": "\n", "\\": "\\", '"': '"', "?": "?"}[e.group(1)], raw
        )
    table = re.findall(r'\{"([^"]+)", (\d+), (lua_\w+)\}', c_text)
    assert table, "no table in the generated file"
    return {name: (int(n), literals[var]) for name, n, var in table}


def test_python_lua_embedding_matches_cmake(tmp_path):
    support = load_support()
    lua_dir = os.path.join(REPO, "core", "lua")
    embed = os.path.join(REPO, "cmake", "EmbedLua.cmake")
    if not shutil.which("cmake") or not os.path.exists(embed):
        pytest.skip("cmake or cmake/EmbedLua.cmake not available")
    ours = tmp_path / "ours.c"
    theirs = tmp_path / "theirs.c"
    support.embed_lua(lua_dir, str(ours))
    subprocess.run(
        ["cmake", "-DLUA_DIR=" + lua_dir, "-DOUT=" + str(theirs), "-P", embed],
        check=True,
        capture_output=True,
    )
    a, b = parse_scripts(ours.read_text()), parse_scripts(theirs.read_text())
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], "script %s differs" % name
    assert "rl_lua_scripts_count = %d;" % len(a) in ours.read_text()
    assert "--@include" not in "".join(src for _, src in a.values())
