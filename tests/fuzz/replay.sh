#!/usr/bin/env bash
# test_fuzz_seeds: the fuzz targets built with driver.c (BUILD/fuzz/) run
# every seed of their corpora once (tests/fuzz/make-seeds.sh); a crash, a
# sanitizer report or a failed check of a target fails the test.
#   replay.sh BUILD SOURCE
set -euo pipefail
build=$1 src=$2
seeds=$build/fuzz-seeds
bash "$src/tests/fuzz/make-seeds.sh" "$seeds" "$build/fuzz" "$src"
for t in pipeline manifest phn checkpoint decode; do
  "$build/fuzz/fuzz_$t" "$seeds/$t"
done
