#!/usr/bin/env bash
# On the GPU machine (library entry `device`): olla's engine against llama-server on a real GPU.
#
# Builds the vendored llama.cpp with CUDA (sm_90, shared libraries) plus llama-server from the
# trimmed llama-cpp-python sources, points llama-cpp-python at it (LLAMA_CPP_LIB_PATH), makes a
# synthetic 1B-shape llama (random weights, SmolLM2's tokenizer, padded to Llama 3's vocabulary)
# quantized to Q4_K_M, and runs scripts/bench (olla, then llama-server, same model, prompts and
# max tokens, greedy) at 1, 8, 32 and 64 concurrent streams. Results in $OUT.
#
# Here, first (as for gpu_manager.sh):
#   scripts/device/trim_llama_cpp_python.sh /tmp/sdist/llama_cpp_python-0.3.36 .llama/llama-cpp-python
#   (a tokenizer-only GGUF at .llama/tokenizer.gguf; py3.12 wheels in .whl), then run with
#   carry [".llama", ".whl"]:  bash scripts/device/gpu_bench.sh [clients] [max_tokens]
set -euo pipefail
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
SRC=$PWD/.llama/llama-cpp-python
BUILD=/tmp/llama-cuda  # outside any carried path: a carried path is replaced on every call
MODELS=/tmp/models
CLIENTS=${1:-1,8,32,64}
MAX_TOKENS=${2:-128}
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$SRC:$PWD

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/gpu.txt"
started=$(date +%s)
if [ ! -e "$BUILD/bin/llama-server" ]; then
    cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF >"$OUT/build.log" 2>&1
    ninja -C "$BUILD" -j16 llama llama-quantize llama-server >>"$OUT/build.log" 2>&1 || {
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
[ "${3:-}" = "setup" ] && exit 0  # build and model only

python3 scripts/bench --model "$M" --gpu --threads 16 --clients "$CLIENTS" \
    --max-tokens "$MAX_TOKENS" --requests-per-client 1 --repeat 1 --ctx-per-seq 1024 \
    --servers olla,llama-server --llama-server "$BUILD/bin/llama-server" --markdown \
    --out "$OUT/results.md" 2>&1 | tee "$OUT/bench.log"
