"""LoRA adapters on a llama.cpp model: loaded with the model, applied to each of its contexts.

llama.cpp keeps an adapter's tensors beside the base weight each one changes (on the GPU for an
offloaded layer, else in RAM) and adds `scale * alpha / rank * B @ A @ x` to that weight's
product in every graph of a context the adapter is set on. A runner serves one model as its
Modelfile made it, so every adapter applies, at scale 1.0 (as Ollama's runner applies them), to
the generation context and to the embedding one alike.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from olla.errors import ModelLoadError

log = logging.getLogger(__name__)

SCALE = 1.0


class LoraAdapters:
    """The adapters of one model, loaded in order; `apply` sets them all on a context.

    `reason` gives llama.cpp's last error line, which is all it says when a load fails.
    """

    def __init__(
        self,
        lc: Any,
        model: Any,
        paths: Sequence[Path],
        reason: Callable[[], str] = lambda: "",
    ) -> None:
        self._lc = lc
        self._handles: list[Any] = []
        for path in paths:
            handle = lc.llama_adapter_lora_init(model, str(path).encode())
            if not handle:
                self.close()
                detail = reason() or "llama.cpp gave no reason"
                raise ModelLoadError(f"LoRA adapter {path.name} could not be loaded: {detail}")
            self._handles.append(handle)
            log.info("loaded LoRA adapter %s", path.name, extra={"adapter": path.name})

    def __len__(self) -> int:
        return len(self._handles)

    def apply(self, ctx: Any) -> None:
        """Set every adapter on `ctx` at SCALE, in one call: llama.cpp replaces the context's
        set each time (the binding's llama_set_adapter_lora, a deprecated wrapper, sets one)."""
        if not self._handles:
            return
        n = len(self._handles)
        handles = (self._lc.llama_adapter_lora_p_ctypes * n)(*self._handles)
        scales = (ctypes.c_float * n)(*([SCALE] * n))
        if self._lc.llama_set_adapters_lora(ctx, handles, n, scales) != 0:
            raise ModelLoadError("llama.cpp could not apply the LoRA adapters to a context")

    def close(self) -> None:
        """Free the adapters: after the contexts that use them, before the model."""
        for handle in self._handles:
            self._lc.llama_adapter_lora_free(handle)
        self._handles = []
