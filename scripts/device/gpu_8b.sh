#!/usr/bin/env bash
# On the GPU machine (library entry `device`): the synthetic 8B-shape llama (Llama-3.1-8B's
# shapes, random weights, SmolLM2's tokenizer padded to 128,256 tokens) in Q4_K_M, loaded by
# olla with 32 parallel sequences: load time and VRAM against olla's own estimate
# (scripts/bench_manager), then 32 concurrent streams, olla and llama-server (scripts/bench).
# Carry [".llama", ".whl"] as for gpu_bench.sh:  bash scripts/device/gpu_8b.sh [max_tokens]
set -euo pipefail
OUT=${OUT:-/tmp/gpu-8b-out}
mkdir -p "$OUT"
MAX_TOKENS=${1:-128}
. "$(dirname "$0")/prepare.sh"  # the build (and the 1B model, which this script leaves alone)

M8=$MODELS/8b-q4_k_m.gguf
if [ ! -e "$M8" ]; then
    started=$(date +%s)
    python3 scripts/synthetic_gguf --shape 8b --pad-vocab --type f16 \
        --tokenizer .llama/tokenizer.gguf --out "$MODELS/8b-f16.gguf"
    "$BUILD/bin/llama-quantize" "$MODELS/8b-f16.gguf" "$M8" Q4_K_M 16 >/tmp/quantize8.log 2>&1 \
        || { tail -20 /tmp/quantize8.log; exit 1; }
    rm -f "$MODELS/8b-f16.gguf"
    echo "8B model made in $(( $(date +%s) - started )) s" | tee -a "$OUT/gpu.txt"
fi
ls -l "$M8" | tee -a "$OUT/gpu.txt"

python3 scripts/bench_manager --model "$M8" --rounds 1 --num-ctx 1024 --num-parallel 32 \
    --json "$OUT/8b-manager.json" 2>&1 | tee "$OUT/8b.md"
python3 scripts/bench --model "$M8" --gpu --threads 16 --clients 32 --max-tokens "$MAX_TOKENS" \
    --requests-per-client 1 --repeat 1 --ctx-per-seq 1024 --servers olla,llama-server \
    --llama-server "$BUILD/bin/llama-server" --markdown 2>&1 | tee -a "$OUT/8b.md"
