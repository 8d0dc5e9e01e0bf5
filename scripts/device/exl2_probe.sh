#!/usr/bin/env bash
# On the GPU machine (library entry `device`): exllamav2 from PyPI against the machine's torch
# and CUDA. Here, first: the wheel (`pip download --no-deps exllamav2`) and SmolLM2's tokenizer
# as tokenizer.json (built from the GGUF's vocabulary) in .exl2/; run with carry [".exl2"]:
#   bash scripts/device/exl2_probe.sh
set -uo pipefail
OUT=${OUT:-/tmp/exl2-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/exl2site .exl2/*.whl
export PYTHONPATH=/tmp/exl2site
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
started=$(date +%s)
python3 -c "import exllamav2.ext; print('extension ready')" > /tmp/ext.log 2>&1
rc=$?
echo "exllamav2 extension: exit $rc in $(( $(date +%s) - started )) s"
tail -40 /tmp/ext.log
[ $rc -eq 0 ] || exit 1
timeout 480 python3 scripts/device/exl2_probe.py
