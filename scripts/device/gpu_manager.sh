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
SRC=$PWD/.llama/llama-cpp-python
BUILD=/tmp/llama-cuda  # outside any carried path: a carried path is replaced on every call
MODELS=/tmp/models
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$SRC:$PWD

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/gpu.txt"
started=$(date +%s)
if [ ! -e "$BUILD/bin/llama-quantize" ]; then
    cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF >"$OUT/build.log" 2>&1
    ninja -C "$BUILD" -j16 llama llama-quantize >>"$OUT/build.log" 2>&1 || {
        tail -40 "$OUT/build.log"; exit 1; }
fi
echo "build: $(( $(date +%s) - started )) s" | tee -a "$OUT/gpu.txt"
LIB=$(dirname "$(find "$BUILD" -name 'libllama.so*' | head -1)")
export LLAMA_CPP_LIB_PATH=$LIB LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
python3 -c "import llama_cpp; print('gpu offload:', llama_cpp.llama_supports_gpu_offload())"

mkdir -p "$MODELS"
if [ ! -e "$MODELS/1b-q4_k_m.gguf" ]; then
    python3 scripts/synthetic_gguf --shape 1b --pad-vocab --type f16 \
        --tokenizer .llama/tokenizer.gguf --out "$MODELS/1b-f16.gguf"
    "$BUILD/bin/llama-quantize" "$MODELS/1b-f16.gguf" "$MODELS/1b-q4_k_m.gguf" Q4_K_M 16 \
        >"$OUT/quantize.log" 2>&1
    rm -f "$MODELS/1b-f16.gguf"
fi
M=$MODELS/1b-q4_k_m.gguf
ls -l "$M"
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
