#!/usr/bin/env bash
# Every symbol libclapp.so exports starts with clapp_ and is declared in the
# installed headers (include/clapp/*.h); there is at least one.
#   check_exports.sh LIBCLAPP.so INCLUDE_DIR
set -euo pipefail
lib=$1 inc=$2
syms=$(nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//')
[ -n "$syms" ] || { echo "check_exports: $lib exports nothing" >&2; exit 1; }
bad=0 n=0
for s in $syms; do
  n=$((n + 1))
  if [[ $s != clapp_* ]]; then
    echo "check_exports: $lib exports '$s', which does not start with clapp_" >&2
    bad=1
  elif ! grep -Eq "(^|[^A-Za-z0-9_])$s[[:space:]]*\(" "$inc"/*.h; then
    echo "check_exports: $lib exports '$s', which no header in $inc declares" >&2
    bad=1
  fi
done
[ $bad = 0 ] && echo "check_exports: $n symbols, all clapp_ calls of $inc/*.h"
exit $bad
