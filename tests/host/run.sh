#!/usr/bin/env bash
# The host example test: examples/host built out of tree against the
# installed prefix (BUILD/test-prefix, tests/host/install.sh) twice, with
# find_package(clapp) and with pkg-config; each pushes its own samples into a
# pipeline and writes one element's features, which must equal what the
# installed `clapp extract` writes for the same samples as a WAV file.
#   run.sh BUILD SOURCE SANITIZE(0|1)
set -euo pipefail
build=$1 src=$2 san=${3:-0}
prefix=$build/test-prefix
work=$build/host-test
rm -rf "$work"
mkdir -p "$work"
lib=$(find "$prefix" -name libclapp.so | head -1)
libdir=$(dirname "$lib")
flags=""
[ "$san" = 1 ] && flags="-fsanitize=address,undefined -fno-omit-frame-pointer"

echo "== find_package(clapp)"
cmake -S "$src/examples/host" -B "$work/cm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_C_FLAGS="-Werror $flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/cm" >/dev/null
echo "== pkg-config clapp"
export PKG_CONFIG_PATH=$libdir/pkgconfig
cc -std=c11 -Wall -Wextra -Werror $flags $(pkg-config --cflags clapp) "$src/examples/host/host.c" \
   -o "$work/host-pc" $(pkg-config --libs clapp) -Wl,-rpath,"$libdir" -lm

# Plugins come from the prefix (found beside libclapp), not the build tree.
export CLAPP_PLUGIN_PATH=

check() {   # PIPE ELEMENT SECONDS TOLERANCE [--set ...]
  local pipe=$1 el=$2 secs=$3 tol=$4 tag
  shift 4
  tag=$(basename "$pipe" .pipe).$el
  mkdir -p "$work/$tag"
  "$work/cm/host" "$pipe" "$el" "$work/$tag/cm.npy" "$work/$tag/sig.wav" "$secs" "$@"
  "$work/host-pc" "$pipe" "$el" "$work/$tag/pc.npy" "$work/$tag/sig-pc.wav" "$secs" "$@"
  printf 'sig.wav\n' > "$work/$tag/m.tsv"
  local sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  "$prefix/bin/clapp" extract "$pipe" --random-init --data "$work/$tag/m.tsv" --out "$work/$tag/x" \
      --element "$el" -q "${sets[@]}"
  /usr/bin/python3 - "$work/$tag" "$el" "$tol" <<'PY'
import sys, numpy as np
d, el, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
ref = np.load(f"{d}/x/sig.{el}.npy")
assert ref.ndim == 2 and ref.shape[0] > 0 and float(ref.std()) > 0, ref.shape
for name in ("cm", "pc"):
    got = np.load(f"{d}/{name}.npy")
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    diff = float(np.abs(got - ref).max())
    bound = tol * (1.0 + float(np.abs(ref).max()))
    print(f"{el} {name}: shape {got.shape}, max |host - extract| = {diff:.3g} (bound {bound:.3g})")
    assert diff <= bound, (name, diff, bound)
PY
}

check "$src/tests/host/conv.pipe" conv1d1 1.3 1e-5
check "$src/tests/host/conv.pipe" conv1d0 0.7 1e-5 source0.block=1000
check "$src/pipelines/raw_features.pipe" source0 0.9 0 source0.gain=0.5 feat.out="$work/raw-feat"
echo "host example: OK"
