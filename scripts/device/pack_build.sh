#!/usr/bin/env bash
# On the GPU machine, after prepare.sh built llama.cpp: packs its bin/ (shared libraries,
# llama-server, llama-quantize) as zstd chunks under $OUT/cuda-bin, small enough to come back.
# Here, put the chunks in .llama/cuda-bin; prepare.sh then unpacks them instead of building.
set -euo pipefail
BUILD=${BUILD:-/tmp/llama-cuda}
mkdir -p "$OUT/cuda-bin"
if command -v zstd >/dev/null; then z="zstd -q -19 -T16" ext=zst; else z="xz -6 -T16" ext=xz; fi
strip --strip-unneeded "$BUILD"/bin/*.so* "$BUILD"/bin/llama-server "$BUILD"/bin/llama-quantize || true
tar -C "$BUILD" -cf - bin | $z | split -b 15M -d - "$OUT/cuda-bin/bin.tar.$ext."
ls -l "$OUT/cuda-bin"
