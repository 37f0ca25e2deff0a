# hiredis >= 1.0 with TLS (hiredis_ssl + OpenSSL), for the library, the Node
# addon and (through fetch_hiredis.py) the Python package.
#
# Default: build the pinned hiredis 1.x source as two static, PIC libraries,
# runlane_hiredis and runlane_hiredis_ssl, linked privately into whatever
# embeds the core (their symbols stay inside: version scripts export only
# runlane_* / the module entry points). The source comes from, first match:
#   1. RUNLANE_HIREDIS_SOURCE_DIR (CMake variable or environment): a
#      directory holding hiredis/hiredis.c ... hiredis/ssl.c;
#   2. <this directory>/../hiredis (an npm tarball or sdist that carries it);
#   3. cmake/fetch_hiredis.py: the pinned, sha256-checked source, cached in
#      RUNLANE_DEPS_CACHE (CMake variable or environment, default
#      <repository>/build/deps) and fetched with pip when missing.
# -DRUNLANE_SYSTEM_HIREDIS=ON uses the system's hiredis and hiredis_ssl
# instead (pkg-config), accepted only when >= 1.0 (for distribution packagers).
#
# Sets: RUNLANE_HIREDIS_LIBS (targets to link), RUNLANE_HIREDIS_BUNDLED,
# HIREDIS_SSL_FOUND (always TRUE: every build has TLS).
include_guard(GLOBAL)
set(_rl_hiredis_dir "${CMAKE_CURRENT_LIST_DIR}")

option(RUNLANE_SYSTEM_HIREDIS "Use the system's hiredis (>= 1.0, with hiredis_ssl) instead of the pinned source" OFF)

find_package(OpenSSL)
if(NOT OPENSSL_FOUND)
  message(FATAL_ERROR "runlane: OpenSSL not found (TLS to Redis): install it (Debian: apt-get install libssl-dev)")
endif()

if(RUNLANE_SYSTEM_HIREDIS)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(HIREDIS IMPORTED_TARGET hiredis>=1.0)
  pkg_check_modules(HIREDIS_SSL IMPORTED_TARGET hiredis_ssl>=1.0)
  if(NOT HIREDIS_FOUND OR NOT HIREDIS_SSL_FOUND)
    execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --modversion hiredis
                    OUTPUT_VARIABLE _rl_sys_hiredis_ver OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    message(FATAL_ERROR "runlane: RUNLANE_SYSTEM_HIREDIS=ON needs hiredis >= 1.0 with hiredis_ssl "
                        "(pkg-config hiredis and hiredis_ssl); found hiredis '${_rl_sys_hiredis_ver}' (empty: none). "
                        "Debian 12's libhiredis-dev is 0.14 (no TLS): leave the option OFF to build "
                        "the pinned hiredis 1.x.")
  endif()
  set(RUNLANE_HIREDIS_LIBS PkgConfig::HIREDIS_SSL PkgConfig::HIREDIS OpenSSL::SSL OpenSSL::Crypto)
  set(RUNLANE_HIREDIS_BUNDLED OFF)
  set(HIREDIS_SSL_FOUND TRUE)
  return()
endif()

if(NOT RUNLANE_HIREDIS_SOURCE_DIR AND DEFINED ENV{RUNLANE_HIREDIS_SOURCE_DIR})
  set(RUNLANE_HIREDIS_SOURCE_DIR "$ENV{RUNLANE_HIREDIS_SOURCE_DIR}")
endif()
if(NOT RUNLANE_HIREDIS_SOURCE_DIR AND EXISTS "${_rl_hiredis_dir}/../hiredis/hiredis/ssl.c")
  get_filename_component(RUNLANE_HIREDIS_SOURCE_DIR "${_rl_hiredis_dir}/../hiredis" ABSOLUTE)
endif()
if(NOT RUNLANE_HIREDIS_SOURCE_DIR)
  if(NOT RUNLANE_DEPS_CACHE AND DEFINED ENV{RUNLANE_DEPS_CACHE})
    set(RUNLANE_DEPS_CACHE "$ENV{RUNLANE_DEPS_CACHE}")
  endif()
  if(NOT RUNLANE_DEPS_CACHE)
    get_filename_component(RUNLANE_DEPS_CACHE "${_rl_hiredis_dir}/../build/deps" ABSOLUTE)
  endif()
  find_package(Python3 COMPONENTS Interpreter)
  if(NOT Python3_Interpreter_FOUND)
    message(FATAL_ERROR "runlane: Python 3 is needed once to fetch the pinned hiredis source "
                        "(cmake/fetch_hiredis.py); or set RUNLANE_HIREDIS_SOURCE_DIR")
  endif()
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" "${_rl_hiredis_dir}/fetch_hiredis.py" --cache "${RUNLANE_DEPS_CACHE}"
    OUTPUT_VARIABLE RUNLANE_HIREDIS_SOURCE_DIR OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rl_fetch_rc)
  if(NOT _rl_fetch_rc EQUAL 0)
    message(FATAL_ERROR "runlane: fetching the pinned hiredis source failed (see above)")
  endif()
endif()

set(_rl_h "${RUNLANE_HIREDIS_SOURCE_DIR}/hiredis")
if(NOT EXISTS "${_rl_h}/hiredis.h" OR NOT EXISTS "${_rl_h}/ssl.c")
  message(FATAL_ERROR "runlane: ${_rl_h} has no hiredis source with ssl.c")
endif()
file(STRINGS "${_rl_h}/hiredis.h" _rl_major REGEX "^#define HIREDIS_MAJOR [0-9]+")
string(REGEX REPLACE ".* " "" _rl_major "${_rl_major}")
if(_rl_major LESS 1)
  message(FATAL_ERROR "runlane: ${_rl_h} is hiredis ${_rl_major}.x; >= 1.0 is needed")
endif()
message(STATUS "runlane: hiredis (static, with TLS) from ${RUNLANE_HIREDIS_SOURCE_DIR}")

# hiredis builds with its own flags: none of our -Werror warnings.
add_library(runlane_hiredis STATIC
  "${_rl_h}/alloc.c" "${_rl_h}/async.c" "${_rl_h}/hiredis.c" "${_rl_h}/net.c"
  "${_rl_h}/read.c" "${_rl_h}/sds.c" "${_rl_h}/sockcompat.c")
add_library(runlane_hiredis_ssl STATIC "${_rl_h}/ssl.c")
foreach(t runlane_hiredis runlane_hiredis_ssl)
  set_target_properties(${t} PROPERTIES POSITION_INDEPENDENT_CODE ON C_VISIBILITY_PRESET hidden)
  target_include_directories(${t} PUBLIC "$<BUILD_INTERFACE:${RUNLANE_HIREDIS_SOURCE_DIR}>")
  target_compile_options(${t} PRIVATE -w)
endforeach()
target_link_libraries(runlane_hiredis_ssl PUBLIC runlane_hiredis OpenSSL::SSL OpenSSL::Crypto)
set(RUNLANE_HIREDIS_LIBS runlane_hiredis_ssl runlane_hiredis OpenSSL::SSL OpenSSL::Crypto)
set(RUNLANE_HIREDIS_BUNDLED ON)
set(HIREDIS_SSL_FOUND TRUE)
