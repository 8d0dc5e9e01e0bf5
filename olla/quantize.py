"""`python -m olla.quantize IN OUT TYPE [THREADS]`: llama.cpp's `llama_model_quantize` in a child
process, so the daemon never loads llama.cpp and a crash there fails only the create.

The daemon side (`quantize_file`) checks the type name first: Ollama's names, any case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from olla.errors import InvalidRequest, OllaError

# What /api/create "quantize" (`olla create --quantize`) takes, named as in Ollama and llama.cpp
TYPES = (
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
)
# Only unquantized weights are quantized, as in Ollama: re-quantizing loses twice.
SOURCES = ("F32", "F16", "BF16")


def type_name(text: str) -> str:
    """The canonical name of a quantization type; InvalidRequest lists the ones there are."""
    name = text.strip().upper()
    if name not in TYPES:
        raise InvalidRequest(f'unknown quantization "{text}"; use one of {", ".join(TYPES)}')
    return name


def quantize_file(source: Path, target: Path, name: str, threads: int | None = None) -> None:
    """Write `source` quantized to `name` at `target`, through the child process."""
    command = [
        sys.executable,
        "-m",
        "olla.quantize",
        str(source),
        str(target),
        name,
        str(threads or os.cpu_count() or 1),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OllaError(f"llama.cpp could not quantize the model to {name}: {last}")


def main(argv: list[str]) -> int:
    import ctypes

    import llama_cpp

    source, target, name, threads = argv[0], argv[1], argv[2], int(argv[3])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if status != 0:
        print(f"llama_model_quantize returned {status}", file=sys.stderr)
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
