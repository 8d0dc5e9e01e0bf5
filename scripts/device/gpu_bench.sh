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
CLIENTS=${1:-1,8,32,64}
MAX_TOKENS=${2:-128}
carried=$(ls .llama/cuda-bin 2>/dev/null | head -1 || true)
. "$(dirname "$0")/prepare.sh"
[ -n "$carried" ] || bash "$(dirname "$0")/pack_build.sh"  # bring the build back for next time
[ "${3:-}" = "setup" ] && exit 0  # build and model only

# the engine alone against a bare llama_decode loop, one KV pool as the runner has on a GPU:
# per-step host overhead, with greedy rows drawn by llama.cpp on the GPU and on the host (the
# runner's default)
for sampling in on off; do
    echo "device sampling: $sampling"
    timeout 150 python3 scripts/bench_engine --model "$M" --gpu-layers 999 --kv-unified \
        --streams "$CLIENTS" --max-tokens "$MAX_TOKENS" --repeat 3 --device-sampling $sampling 2>&1 || true
done | tee "$OUT/engine.log"

python3 scripts/bench --model "$M" --gpu --threads 16 --clients "$CLIENTS" \
    --max-tokens "$MAX_TOKENS" --requests-per-client 1 --repeat 3 --ctx-per-seq 1024 \
    --servers olla,llama-server --llama-server "$BUILD/bin/llama-server" --markdown \
    --out "$OUT/results.md" 2>&1 | tee "$OUT/bench.log"

# olla again with a KV stream per sequence (its CPU default) instead of one pool (its GPU
# default): prompts of different lengths then take llama.cpp a pass each
OLLA_KV_UNIFIED=false python3 scripts/bench --model "$M" --gpu --threads 16 --clients "$CLIENTS" \
    --max-tokens "$MAX_TOKENS" --requests-per-client 1 --repeat 3 --ctx-per-seq 1024 \
    --servers olla --markdown --out "$OUT/results-per-slot.md" 2>&1 | tee -a "$OUT/bench.log"

# llama-server again with its backend sampling (-bs: greedy rows drawn on the GPU)
python3 scripts/bench --model "$M" --gpu --threads 16 --clients "$CLIENTS" \
    --max-tokens "$MAX_TOKENS" --requests-per-client 1 --repeat 3 --ctx-per-seq 1024 \
    --servers llama-server --llama-server "$BUILD/bin/llama-server" --llama-server-args=-bs \
    --markdown --out "$OUT/results-bs.md" 2>&1 | tee -a "$OUT/bench.log"
