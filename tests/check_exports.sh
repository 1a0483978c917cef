#!/usr/bin/env bash
# Every symbol libclapp.so exports starts with clapp_ and is declared in the
# installed headers (include/clapp/*.h); there is at least one. With the
# static core library as well: no hidden core call takes a prefix the public
# calls use (clapp_pipeline_, clapp_catalog_, clapp_checkpoint_) unless a
# public header declares it (docs/DESIGN.md §1a, names).
#   check_exports.sh LIBCLAPP.so INCLUDE_DIR [LIBCLAPP_CORE.a]
set -euo pipefail
lib=$1 inc=$2 core=${3:-}
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
if [ -n "$core" ]; then
  for s in $(nm --defined-only "$core" 2>/dev/null | awk '$2 ~ /^[TDBR]$/ {print $3}' | sort -u); do
    case $s in
      clapp_pipeline_*|clapp_catalog_*|clapp_checkpoint_*)
        if ! grep -Eq "(^|[^A-Za-z0-9_])$s[[:space:]]*\(" "$inc"/*.h; then
          echo "check_exports: core call '$s' takes a public prefix but is not public; name it after its part" >&2
          bad=1
        fi ;;
    esac
  done
fi
[ $bad = 0 ] && echo "check_exports: $n symbols, all clapp_ calls of $inc/*.h"
exit $bad
