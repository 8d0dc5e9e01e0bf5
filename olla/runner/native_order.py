"""Imported first by the runner, so that native libraries load in an order that works.

llama.cpp's libraries load before numpy's: with numpy 2.5's loaded first (its bundled OpenBLAS
and gfortran), llama.cpp crashed in its tokenizer set-up on the GPU machine (docs/gpu.md). They
load only for a llama.cpp model: beside PyTorch's CUDA libraries they crashed an exllamav2 runner
as it loaded ("free(): invalid pointer").
"""

from __future__ import annotations

import json
import sys


def backend_of(argv: list[str]) -> str:
    """The backend the runner's spec (its first argument) names; llama.cpp when there is none."""
    try:
        return str(json.loads(argv[1]).get("backend", "llama_cpp"))
    except (IndexError, ValueError, AttributeError):
        return "llama_cpp"


if backend_of(sys.argv) == "llama_cpp":
    import llama_cpp  # noqa: F401
