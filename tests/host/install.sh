#!/usr/bin/env bash
# Installs the build into BUILD/test-prefix (the CTest fixture that the host
# example and Python tests run against).
set -euo pipefail
build=$1
rm -rf "$build/test-prefix"
cmake --install "$build" --prefix "$build/test-prefix" >/dev/null
test -f "$build/test-prefix/include/clapp/clapp.h"
