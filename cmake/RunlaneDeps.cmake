# Dependencies, found with pkg-config. A missing one stops configure and
# names the package that provides it.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install it (Debian: apt-get install pkg-config)")
endif()
find_package(Threads REQUIRED)

# hiredis >= 1.0 with TLS: the pinned source built here, or the system's
# with -DRUNLANE_SYSTEM_HIREDIS=ON (see RunlaneHiredis.cmake).
include(RunlaneHiredis)
pkg_check_modules(CJSON IMPORTED_TARGET libcjson)
if(NOT CJSON_FOUND)
  message(FATAL_ERROR "cJSON not found: install it (Debian: apt-get install libcjson-dev)")
endif()
find_package(CURL 7.68)
if(NOT CURL_FOUND)
  message(FATAL_ERROR "libcurl >= 7.68 not found: install it (Debian: apt-get install libcurl4-openssl-dev)")
endif()
