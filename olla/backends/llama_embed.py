"""Embeddings on llama.cpp: a second, small context on the loaded model that pools its output.

The pooling is the model's own (an embedding model says mean, CLS or last in its GGUF); a model
without one (a chat model) is pooled by mean. Vectors come back as pooled; the runner normalises
them (for all but Ollama's older /api/embeddings, which gives some models' vectors raw).
The context is made on the first embedding request, so a model used only for chat pays nothing.

A whole input goes through in one ubatch (pooling spans it), and a chat model's output layer runs
for every token of it: on SmolLM2 (49,152-token vocabulary) a 2,048-token input took 838 MiB more,
a 512-token one 210 MiB. So a chat model embeds at most CHAT_MODEL_TOKENS per input; an embedding
model (its own pooling, no output layer) takes up to the context it was given.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from olla.errors import ModelLoadError

_POOLING_UNSPECIFIED, _POOLING_NONE, _POOLING_MEAN = -1, 0, 1
CHAT_MODEL_TOKENS = 512


class Embedder:
    """One llama.cpp context with embeddings on; `embed` runs one input at a time."""

    def __init__(self, lc: Any, model: Any, num_ctx: int, num_threads: int | None) -> None:
        self._lc = lc
        self.num_ctx = num_ctx
        self._ctx = self._context(model, num_ctx, num_threads, _POOLING_UNSPECIFIED)
        if lc.llama_pooling_type(self._ctx) == _POOLING_NONE:  # a chat model: mean, shorter
            lc.llama_free(self._ctx)
            self.num_ctx = num_ctx = min(num_ctx, CHAT_MODEL_TOKENS)
            self._ctx = self._context(model, num_ctx, num_threads, _POOLING_MEAN)
        self._size = int(lc.llama_model_n_embd(model))
        self._tokens = np.zeros(num_ctx, dtype=np.int32)
        self._positions = np.arange(num_ctx, dtype=np.int32)
        self._num_seq_ids = np.ones(num_ctx, dtype=np.int32)
        self._seq = ctypes.c_int32(0)
        self._seq_ptrs = (ctypes.POINTER(ctypes.c_int32) * num_ctx)(
            *([ctypes.pointer(self._seq)] * num_ctx)
        )
        self._outputs = np.ones(num_ctx, dtype=np.int8)

    @property
    def context(self) -> Any:
        """The llama.cpp context, e.g. for the model's LoRA adapters to be set on."""
        return self._ctx

    def _context(self, model: Any, num_ctx: int, threads: int | None, pooling: int) -> Any:
        params = self._lc.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = num_ctx  # one input in one ubatch
        params.n_seq_max = 1
        params.embeddings = True
        params.pooling_type = pooling
        params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
        params.no_perf = True
        ctx = self._lc.llama_init_from_model(model, params)
        if not ctx:
            raise ModelLoadError(f"llama.cpp could not make an embedding context of {num_ctx}")
        return ctx

    def embed(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        """The pooled embedding of `tokens` (at most `num_ctx` of them), not normalised."""
        lc, n = self._lc, len(tokens)
        lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        self._tokens[:n] = tokens
        batch = lc.llama_batch()
        batch.n_tokens = n
        batch.token = self._tokens.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        batch.embd = None
        batch.pos = self._positions.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        batch.n_seq_id = self._num_seq_ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        batch.seq_id = self._seq_ptrs
        batch.logits = self._outputs.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        status = lc.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode for an embedding failed with status {status}")
        pointer = lc.llama_get_embeddings_seq(self._ctx, 0)
        return np.ctypeslib.as_array(pointer, shape=(self._size,)).astype(np.float32)

    def close(self) -> None:
        if self._ctx:
            self._lc.llama_free(self._ctx)
            self._ctx = None
