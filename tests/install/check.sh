#!/usr/bin/env bash
# Installs a build into a temporary prefix, then builds and runs a consumer
# with find_package(runlane) (shared and static) and with pkg-config.
#   tests/install/check.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?build dir}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/runlane-install.XXXXXX)
trap 'rm -rf "$T"' EXIT
cmake --install "$BUILD" --prefix "$T/prefix" >/dev/null
test -f "$T/prefix/include/runlane.h"
soname=$(objdump -p "$T"/prefix/lib*/librunlane.so | awk '/SONAME/{print $2}')
echo "installed soname: $soname"
case "$soname" in librunlane.so.[0-9]*) ;; *) echo "bad soname"; exit 1;; esac
cmake -S "$HERE" -B "$T/b" -G Ninja -DCMAKE_PREFIX_PATH="$T/prefix" >/dev/null
cmake --build "$T/b" >/dev/null
LD_LIBRARY_PATH=$(echo "$T"/prefix/lib*) "$T/b/consumer"
"$T/b/consumer_static"
PKG_CONFIG_PATH=$(echo "$T"/prefix/lib*/pkgconfig) sh -c \
  'cc -o "$1/pc" "$2/consumer.c" $(pkg-config --cflags runlane) $(pkg-config --libs runlane)' _ "$T" "$HERE"
LD_LIBRARY_PATH=$(echo "$T"/prefix/lib*) "$T/pc"
