# Dependencies, found with pkg-config. A missing one stops configure and
# names the package that provides it.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install it (Debian: apt-get install pkg-config)")
endif()
find_package(Threads REQUIRED)

pkg_check_modules(HIREDIS IMPORTED_TARGET hiredis)
if(NOT HIREDIS_FOUND)
  message(FATAL_ERROR "hiredis not found: install it (Debian: apt-get install libhiredis-dev)")
endif()
pkg_check_modules(CJSON IMPORTED_TARGET libcjson)
if(NOT CJSON_FOUND)
  message(FATAL_ERROR "cJSON not found: install it (Debian: apt-get install libcjson-dev)")
endif()
find_package(CURL 7.68)
if(NOT CURL_FOUND)
  message(FATAL_ERROR "libcurl >= 7.68 not found: install it (Debian: apt-get install libcurl4-openssl-dev)")
endif()

# hiredis 0.14 (Debian 12) and 1.x differ; the code guards on HIREDIS_MAJOR.
pkg_check_modules(HIREDIS_SSL QUIET IMPORTED_TARGET hiredis_ssl)
