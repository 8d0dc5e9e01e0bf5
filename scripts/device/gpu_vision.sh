#!/usr/bin/env bash
# On the GPU machine (library entry `device`): a vision model served by olla and by llama-server.
#
# Builds the vendored llama.cpp with CUDA as gpu_bench.sh does (prepare.sh: the synthetic 1B-shape
# Q4_K_M, to which scripts/vision_vocab adds idefics3's image tokens), writes
# scripts/synthetic_mmproj's projector for it (SmolVLM-256M's SigLIP + idefics3
# recipe at its real depth, random weights; a 512x512 image is 16 tiles and an overview, 1,088
# tokens), and runs scripts/device/vision_probe.py: time to first token of an image alone and
# beside 8 text streams, the streams' gaps, olla's memory estimate against the GPU's use.
# Here, first: as for gpu_bench.sh; run with carry [".llama", ".whl"]:
#   bash scripts/device/gpu_vision.sh setup; bash scripts/device/gpu_vision.sh (a warm machine
#   keeps the build and the models in /tmp between the two calls)
set -euo pipefail
OUT=${OUT:-/tmp/gpu-vision-out}
mkdir -p "$OUT"
carried=$(ls .llama/cuda-bin 2>/dev/null | head -1 || true)
. "$(dirname "$0")/prepare.sh"
[ -n "$carried" ] || bash "$(dirname "$0")/pack_build.sh"  # bring the build back for next time
ls "$LIB" | grep -i mtmd | tee -a "$OUT/gpu.txt"
# the image tokens of the recipe in the vocabulary (llama-server refuses images without them)
[ -e /tmp/models/1b-vision.gguf ] ||
    python3 scripts/vision_vocab --model "$M" --out /tmp/models/1b-vision.gguf | tee -a "$OUT/gpu.txt"
[ -e /tmp/models/mmproj.gguf ] ||
    python3 scripts/synthetic_mmproj --model "$M" --out /tmp/models/mmproj.gguf | tee -a "$OUT/gpu.txt"
[ "${1:-}" = "setup" ] && exit 0  # build and models only (a call's 10 minutes)
timeout 540 python3 scripts/device/vision_probe.py --model /tmp/models/1b-vision.gguf \
    --mmproj /tmp/models/mmproj.gguf \
    --llama-server "$BUILD/bin/llama-server" 2>"$OUT/probe.log" | tee "$OUT/vision.json"
