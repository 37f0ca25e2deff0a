#!/usr/bin/env bash
# Installs what the build and the tests need, only where it is missing.
# Debian packages with apt-get (as root, or through sudo when available).
set -euo pipefail

missing=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }

need_cmd cc build-essential
need_cmd c++ g++
need_cmd cmake cmake
need_cmd ninja ninja-build
need_cmd pkg-config pkg-config
# hiredis >= 1.0 with TLS is built from a pinned source (cmake/fetch_hiredis.py,
# fetched below); it needs OpenSSL's headers.
need_pkg libssl-dev
need_pkg libcurl4-openssl-dev
need_pkg libcjson-dev
# `runlane dashboard` serves HTTP with libmicrohttpd.
need_pkg libmicrohttpd-dev
# The dashboard's browser test (tests/browser) drives Debian's chromium,
# headless, with playwright-core (no browser download).
need_cmd chromium chromium
need_cmd redis-server redis-server
need_cmd redis-cli redis-tools
# TLS tests (tests/c/test_tls.c, cli_tls, tests/python/test_tls.py and the
# clean-room install test) make their certificates; the clean-room test
# (tests/install/cleanroom.sh) builds a Debian minimal root.
need_cmd debootstrap debootstrap
need_cmd openssl openssl
need_cmd python3 python3
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${RUNLANE_NEED_NODE:-1}" = 1 ]; then
  need_cmd node nodejs
  need_cmd npm npm
fi
if [ "${RUNLANE_NEED_VALGRIND:-0}" = 1 ]; then need_cmd valgrind valgrind; fi
# ABI check (tests/abi, ctest abi_check): libabigail's abidw/abidiff.
need_cmd abidiff abigail-tools
# Fuzzing (tests/fuzz/run.sh), only when asked: clang, and the libFuzzer and
# sanitizer runtimes (a Recommends of clang, missing where recommends are off).
if [ "${RUNLANE_NEED_CLANG:-0}" = 1 ]; then
  if command -v clang >/dev/null 2>&1; then
    need_pkg "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
  else
    missing+=(clang libclang-rt-14-dev)
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A venv with the Python tools of the test suite (Debian's python refuses
# system-wide pip installs).
VENV=${RUNLANE_VENV:-$(cd "$(dirname "$0")/.." && pwd)/build/venv}
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
if ! "$VENV/bin/python" -c 'import pytest, yaml, jsonschema' >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --disable-pip-version-check pytest pyyaml jsonschema
fi

# The pinned hiredis 1.x source (sha256-checked), cached in
# ${RUNLANE_DEPS_CACHE:-build/deps} so that builds need no network.
"$VENV/bin/python" "$(cd "$(dirname "$0")/.." && pwd)/cmake/fetch_hiredis.py" >/dev/null
