"""Which backend runs a model, by its format, and whether that backend is installed.

Light on purpose: the daemon imports it, so it never imports a backend itself."""

from __future__ import annotations

import importlib.util

from olla.errors import NotSupported

LLAMA_CPP = "llama_cpp"  # GGUF files, CPU and GPU
EXLLAMAV2 = "exllamav2"  # EXL2 and safetensors directories, CUDA only: the olla[exl2] extra
EXL2_PAGE = 256  # tokens per page of exllamav2's cache; its length is a multiple of this


def check_exllamav2(model: str, model_format: str) -> None:
    """NotSupported (501) naming what to install when exllamav2 or PyTorch is missing; looked
    up without importing them (torch takes seconds to import)."""
    missing = [m for m in ("exllamav2", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise NotSupported(
            f"{model} is an {model_format} model, which olla runs with exllamav2; "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install 'olla[exl2]' (it needs a CUDA GPU and PyTorch built for it), then "
            "restart olla serve"
        )


def exllamav2_pages() -> bool:
    """Whether exllamav2's generator can page its cache (and so batch): only with flash-attn.
    Without it, it refuses paging and runs one sequence at a time."""
    return importlib.util.find_spec("flash_attn") is not None
