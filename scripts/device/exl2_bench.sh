#!/usr/bin/env bash
# On the GPU machine (library entry `device`): olla with exllamav2 against a plain script driving
# ExLlamaV2DynamicGenerator, at 1, 8 and 32 streams. Carry .whl, .llama (olla's dependencies and
# llama-cpp-python, which the runner imports) and .exl2 (exl2_probe.sh says what it holds):
#   bash scripts/device/exl2_bench.sh --streams 1,8 --pairs 7   # builds, converts, measures: ~7 min
# (--convert-only stops after the model; a call within 30 s, on the still-lent machine, reuses it.
# A measurement.json left in $OUT and copied into .exl2/ saves the converter's measuring pass.)
set -uo pipefail
OUT=${OUT:-/tmp/exl2-out}
mkdir -p "$OUT"
PREPARE_MODEL=0 source scripts/device/prepare.sh
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
[ -d /tmp/exl2site/exllamav2 ] ||
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/exl2site .exl2/*.whl
export PYTHONPATH=$PYTHONPATH:/tmp/exl2site
started=$(date +%s)
python3 -c "import exllamav2.ext, exllamav2.attn as a; print('flash-attn:', a.has_flash_attn)" \
    > /tmp/ext.log 2>&1 || { tail -40 /tmp/ext.log; exit 1; }
echo "exllamav2 extension ready in $(( $(date +%s) - started )) s; $(tail -1 /tmp/ext.log)"
python3 scripts/device/exl2_bench.py "$@" 2>&1 | tee "$OUT/exl2_bench.txt"
