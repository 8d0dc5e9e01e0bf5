#!/usr/bin/env bash
# On the GPU machine (library entry `device`): the model manager on a real GPU.
#
# Builds the vendored llama.cpp with CUDA (sm_90, shared libraries) from the trimmed
# llama-cpp-python sources, points llama-cpp-python at it (LLAMA_CPP_LIB_PATH), makes a synthetic
# 1B-shape llama (random weights, SmolLM2's tokenizer) quantized to Q4_K_M, and runs
# scripts/bench_manager on it: the whole model on the GPU, a partial offload under a VRAM budget
# too small for it, a forced num_gpu, and the CPU; each with load and unload times, nvidia-smi
# before, during and after, and the estimate against what llama.cpp allocated. Results in $OUT.
#
# Here, first:
#   scripts/device/trim_llama_cpp_python.sh /tmp/sdist/llama_cpp_python-0.3.36 .llama/llama-cpp-python
#   (a tokenizer-only GGUF of the default model at .llama/tokenizer.gguf; wheels in .whl, see
#   the device README), then run with carry [".llama", ".whl"]:
#   bash scripts/device/gpu_manager.sh
set -euo pipefail
OUT=${OUT:-/tmp/gpu-manager-out}
mkdir -p "$OUT"
. "$(dirname "$0")/prepare.sh"
[ "${1:-}" = "setup" ] && exit 0  # build and model only

bench() {  # label, then bench_manager's flags
    local label=$1; shift
    echo "== $label" | tee -a "$OUT/results.md"
    python3 scripts/bench_manager --model "$M" --rounds 3 --json "$OUT/$label.json" "$@" \
        | tee -a "$OUT/results.md"
    echo | tee -a "$OUT/results.md"
}
bench full
# a VRAM budget of 60% of what the whole model took on the GPU: a partial offload
budget=$(python3 -c "import json; r=json.load(open('$OUT/full.json'))['rounds'][-1]; \
print(int((r['gpu_loaded'][0]-r['gpu_before'][0])*0.6))")
bench partial --vram-budget "${budget}MiB"
bench num_gpu_4 --num-gpu 4
bench cpu --num-gpu 0
