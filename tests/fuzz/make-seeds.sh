#!/usr/bin/env bash
# Makes the seed corpora of the fuzz targets in OUT/<target>/:
#   make-seeds.sh OUT FUZZ_BIN_DIR SOURCE_DIR
# pipeline: the committed seeds/pipeline/* and every pipelines/*.pipe;
# manifest, phn: the committed seeds; checkpoint: the fuzz_checkpoint
# target's own graph saved with and without optimizer state
# ($CLAPP_FUZZ_SEED_DIR; needs CLAPP_PLUGIN_PATH); decode: tiny media made
# by ffmpeg (0.2 s of audio in 9 formats, 5 frames of 16x12 video in 6),
# each after the control byte fuzz_decode.c reads (0x02: audio at 16 kHz;
# 0x4b: 18x14 RGB video at 7.5 fps). Nothing binary is committed.
set -euo pipefail
out=$1 bin=$2 src=$3
rm -rf "$out"
mkdir -p "$out"/{pipeline,manifest,phn,checkpoint,decode}
cp "$src"/tests/fuzz/seeds/pipeline/* "$src"/pipelines/*.pipe "$out/pipeline/"
cp "$src"/tests/fuzz/seeds/manifest/* "$out/manifest/"
cp "$src"/tests/fuzz/seeds/phn/* "$out/phn/"
CLAPP_FUZZ_SEED_DIR="$out/checkpoint" "$bin/fuzz_checkpoint" -runs=0 > /dev/null 2>&1 || {
  echo "make-seeds: fuzz_checkpoint could not write its seeds (CLAPP_PLUGIN_PATH=${CLAPP_PLUGIN_PATH:-})" >&2
  exit 1
}
test -s "$out/checkpoint/with_optimizer.safetensors"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ff() { ffmpeg -nostdin -v error -y "$@"; }
a="-f lavfi -i sine=f=440:d=0.2:r=16000"
ff $a -c:a pcm_s16le "$tmp/a.wav"
ff $a -c:a pcm_f32le "$tmp/f32.wav"
ff $a -c:a flac "$tmp/a.flac"
ff $a -c:a libmp3lame -b:a 32k "$tmp/a.mp3"
ff $a -c:a libvorbis "$tmp/a.ogg"
ff $a -c:a libopus -b:a 16k "$tmp/a.opus"
ff $a -c:a aac -b:a 32k "$tmp/a.m4a"
ff $a -c:a pcm_s16be "$tmp/a.aiff"
ff $a -ac 2 -c:a pcm_mulaw "$tmp/a.au"
for f in "$tmp"/*.{wav,flac,mp3,ogg,opus,m4a,aiff,au}; do
  { printf '\002'; cat "$f"; } > "$out/decode/audio-$(basename "$f")"
done
v="-f lavfi -i testsrc=size=16x12:rate=10:duration=0.5"
ff $v -c:v mjpeg "$tmp/v.avi"
ff $v -c:v libx264 -pix_fmt yuv420p "$tmp/v.mp4"
ff $v -c:v libvpx "$tmp/v.webm"
ff $v -c:v mpeg1video -r 25 "$tmp/v.mpg"
ff $v "$tmp/v.gif"
ff $v -c:v ffv1 "$tmp/v.mkv"
for f in "$tmp"/v.*; do
  { printf '\113'; cat "$f"; } > "$out/decode/video-$(basename "$f")"
done
echo "make-seeds: $(find "$out" -type f | wc -l) seeds in $out" >&2
