"""The llama.cpp backend: one model and its KV cache driven through the low-level C API.

The engine batches many sequences into one `llama_decode`: every row carries its own sequence id
(slot). The cache has one of two layouts. Per slot (llama-server's default): each slot has its own
stream of cells, attention of a row spans only its own stream, and `copy_prefix` copies the
source stream's data (`llama_memory_seq_cp` across streams copies the whole stream, so the copy is
cut back to the prefix). Unified (`kv_unified`): slots share one pool, `copy_prefix` only tags
cells, but every decode row's attention spans every occupied cell (masked), which cost 20-35% at
16 streams on the CPU (docs/benchmarks.md). The `llama_batch` is built once over numpy buffers,
so filling it per step is a few vectorised copies rather than a Python loop per token.
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from olla.backends.cpu_threads import default_threads
from olla.backends.llama_embed import Embedder
from olla.backends.llama_grammar import GrammarConstraint, grammar_for
from olla.backends.llama_lora import LoraAdapters
from olla.backends.llama_vision import Projector, decode_embeddings
from olla.engine.backend import ForwardBatch, KVCacheFull
from olla.engine.constraint import Constraint
from olla.engine.images import ImageSpan
from olla.errors import ModelLoadError
from olla.memory import Memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlamaCppConfig:
    """How to load a GGUF: cache size and layout, slots, batch, threads, GPU layers, precision."""

    model_path: Path
    num_cells: int = 4096
    num_slots: int = 4
    max_batch_tokens: int = 512
    num_threads: int | None = None  # None: olla's choice (olla.backends.cpu_threads)
    num_gpu_layers: int = 0
    main_gpu: int | None = None  # keep the model on this one GPU; None: llama.cpp's split
    # None: llama.cpp's choice (on where supported); the runner picks (olla/runner.py)
    flash_attention: bool | None = None
    cache_type: str = "f16"
    use_mmap: bool = True
    kv_unified: bool = False
    # greedy rows' argmax in llama.cpp's graph (its backend sampling) rather than on the host:
    # their logits never leave the GPU. Off: on the H100 it made steps slower, not faster
    # (llama.cpp builds and reads back one sampler per sequence; docs/gpu.md)
    device_sampling: bool = False
    verbose: bool = False
    adapter_paths: tuple[Path, ...] = ()  # LoRA adapters, applied at scale 1.0 (llama_lora)


_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR
# "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB", "llama_kv_cache:  CUDA0 KV ..."
# "llama_adapter_lora_init_impl:        CPU LoRA buffer size =     3.70 MiB": an adapter's
# tensors sit beside the weights they change, so they count as weights
_BUFFER_LINE = re.compile(
    r"(\S+)\s+(model|KV|compute|output|LoRA)\s+buffer size\s*=\s*([\d.]+)\s+MiB"
)
_BUFFER_KINDS = {
    "model": "weights",
    "LoRA": "weights",
    "KV": "kv_cache",
    "compute": "compute",
    "output": "output",
}
_REPACK_BUFFERS = {"CPU_REPACK", "AMX", "CPU_KLEIDIAI"}  # the CPU backend's extra buffer types
_CACHE_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2, "bf16": 30}
# Tokens one embedding input may have (a second context holds them, made on first use)
_EMBED_CONTEXT = 2048


def parse_buffer_sizes(lines: Iterable[str]) -> Memory:
    """What llama.cpp allocated, from its log lines `<device> <kind> buffer size = N MiB`."""
    sizes = dict.fromkeys(_BUFFER_KINDS.values(), 0)
    gpu = repacked = 0
    for line in lines:
        match = _BUFFER_LINE.search(line)
        if match is None:
            continue
        device, kind, mib = match.group(1), _BUFFER_KINDS[match.group(2)], float(match.group(3))
        size = int(mib * 2**20)
        if kind == "weights" and device in _REPACK_BUFFERS:
            repacked += size  # a reordered copy of tensors that are also in CPU_Mapped
            continue
        sizes[kind] += size
        if not device.upper().startswith("CPU") and not device.endswith("_Host"):
            gpu += size  # CUDA0, ROCm0...; CUDA_Host is pinned host memory
    return Memory(**sizes, gpu=gpu, repacked=repacked)


class LlamaCppBackend:
    """A GGUF model loaded through llama.cpp, serving the engine's ForwardBatch calls."""

    def __init__(self, config: LlamaCppConfig) -> None:
        import llama_cpp as lc  # the native library loads here, only in runner processes

        self._lc = lc
        self._log_lines: list[str] | None = []  # collected while loading, for `memory`
        self._last_error = ""  # llama.cpp's last error line: all it says of a failed adapter
        self._verbose = config.verbose
        # llama.cpp's log goes through our callback (kept alive on self): its buffer sizes are
        # the only report of what the load allocated
        self._log_callback = lc.llama_log_callback(self._on_log)
        lc.llama_log_set(self._log_callback, ctypes.c_void_p(0))
        lc.llama_backend_init()
        self._model: Any = self._load_model(config)
        try:
            self._adapters = LoraAdapters(lc, self._model, config.adapter_paths, self._reason)
        except ModelLoadError:
            lc.llama_model_free(self._model)
            raise
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.vocab_size = int(lc.llama_vocab_n_tokens(self._vocab))
        # as asked, else fewer than the cores when that leaves room for the daemon (cpu_threads)
        self.num_threads = config.num_threads or default_threads()
        log.info("llama.cpp threads: %d", self.num_threads, extra={"threads": self.num_threads})
        self._ctx: Any = self._make_context(config, self.num_threads)
        self._adapters.apply(self._ctx)
        self.memory = parse_buffer_sizes(self._log_lines or [])
        self._log_lines = None
        self._memory = lc.llama_get_memory(self._ctx)
        # a recurrent model's state or M-RoPE's positions cannot move: said once, at load
        self.can_shift = bool(lc.llama_memory_can_shift(self._memory))
        if not self.can_shift:
            log.info(
                "llama.cpp cannot shift this model's KV cache (recurrent state or M-RoPE "
                "positions): a sequence that fills its context ends with done reason 'length'"
            )
        self.num_cells = int(lc.llama_n_ctx(self._ctx))
        self.num_slots = int(lc.llama_n_seq_max(self._ctx))
        self.kv_unified = config.kv_unified
        self.cells_per_slot = int(lc.llama_n_ctx_seq(self._ctx))
        self.max_batch_tokens = config.max_batch_tokens
        self._batch = _NumpyBatch(config.max_batch_tokens, lc)
        self._eog = np.array(
            [lc.llama_vocab_is_eog(self._vocab, t) for t in range(self.vocab_size)], dtype=bool
        )
        self._pieces: dict[int, bytes] = {}
        self.model_path = config.model_path
        self._embedder: Embedder | None = None
        self._num_ctx = config.num_cells // config.num_slots
        self.device_sampling = config.device_sampling
        # a greedy sampler chain per slot, made on first use, attached while the slot's rows
        # are drawn on the device (attaching or detaching one re-plans the next graph)
        self._chains: list[Any] = [None] * self.num_slots
        self._attached = np.zeros(self.num_slots, dtype=bool)
        self._sampled: npt.NDArray[np.int32] | None = None

    def _load_model(self, config: LlamaCppConfig) -> ctypes.c_void_p:
        lc = self._lc
        params = lc.llama_model_default_params()
        params.n_gpu_layers = config.num_gpu_layers
        if config.main_gpu is not None:
            params.split_mode = 0  # LLAMA_SPLIT_MODE_NONE: the placement sized one GPU
            params.main_gpu = config.main_gpu
        params.use_mmap = config.use_mmap
        model = lc.llama_model_load_from_file(str(config.model_path).encode(), params)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load {config.model_path}")
        return model

    def _make_context(self, config: LlamaCppConfig, threads: int) -> ctypes.c_void_p:
        lc = self._lc
        params = lc.llama_context_default_params()
        params.n_ctx = config.num_cells
        params.n_batch = config.max_batch_tokens
        params.n_ubatch = config.max_batch_tokens
        params.n_seq_max = config.num_slots
        params.kv_unified = config.kv_unified  # else n_ctx is split evenly among the slots
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        if config.flash_attention is not None:
            params.flash_attn_type = int(config.flash_attention)
        if config.cache_type not in _CACHE_TYPES:
            raise ModelLoadError(f"unknown KV cache type {config.cache_type!r}")
        params.type_k = params.type_v = _CACHE_TYPES[config.cache_type]
        ctx = lc.llama_init_from_model(self._model, params)
        if not ctx:
            self._adapters.close()
            lc.llama_model_free(self._model)
            raise ModelLoadError(
                f"llama.cpp could not create a context of {config.num_cells} tokens for "
                f"{config.model_path.name} (out of memory?)"
            )
        return ctx

    def _on_log(self, level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace")
        if self._log_lines is not None:
            self._log_lines.append(line)
        if level == _LOG_ERROR:
            self._last_error = line.strip()
            log.warning("llama.cpp: %s", line.rstrip())
        elif self._verbose and line.strip():
            log.debug("llama.cpp: %s", line.rstrip())

    def _reason(self) -> str:
        """llama.cpp's last error, without the function name it starts with."""
        return self._last_error.split(": ", 1)[-1]

    def decode(self, batch: ForwardBatch) -> npt.NDArray[np.float32]:
        """Run one batch; the logits returned are a view valid until the next decode."""
        n = len(batch)
        if n > self.max_batch_tokens:
            raise ValueError(f"batch of {n} tokens over max_batch_tokens {self.max_batch_tokens}")
        self._batch.fill(batch)
        rows = np.flatnonzero(batch.want_logits)
        device = None
        if self.device_sampling and batch.device_greedy is not None:
            device = batch.device_greedy[rows]
            self._attach(batch.slots[rows], device)
            if not self.device_sampling:  # llama.cpp refused: the host samples every row
                device = None
        status = self._lc.llama_decode(self._ctx, self._batch.struct)
        if status == 1:
            raise KVCacheFull("no room in the KV cache for this batch")
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        pointer = self._lc.llama_get_logits(self._ctx)  # waits for the device
        self._sampled = None
        if device is not None and device.any():
            sampled = np.full(len(rows), -1, dtype=np.int32)
            get = self._lc.llama_get_sampled_token_ith
            for k in np.flatnonzero(device).tolist():
                sampled[k] = get(self._ctx, int(rows[k]))
            if (sampled[device] < 0).any():
                raise RuntimeError("llama.cpp drew no token for a row it was to sample")
            self._sampled = sampled
        return np.ctypeslib.as_array(pointer, shape=(len(rows), self.vocab_size))

    def sampled_tokens(self) -> npt.NDArray[np.int32] | None:
        return self._sampled

    def decode_image(
        self, slot: int, image: ImageSpan, first: int, position: int, want_logits: bool
    ) -> npt.NDArray[np.float32]:
        """Decode an image's rows [first, num_tokens) into `slot`, the image at `position`."""
        rows = image.embeddings[first:]
        self._sampled = None
        out = decode_embeddings(
            self._lc,
            self._ctx,
            slot,
            rows,
            image.positions(position, first),
            want_logits,
            self.max_batch_tokens,
            image.non_causal,
        )
        if not out:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        pointer = self._lc.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(1, self.vocab_size))

    def projector(self, path: Path, use_gpu: bool) -> Projector:
        """libmtmd's context for this model and the vision projector at `path`."""
        return Projector(self._model, path, use_gpu, self.num_threads, self.max_batch_tokens)

    def _attach(self, slots: npt.NDArray[np.int32], device: npt.NDArray[np.bool_]) -> None:
        """Give each output row's slot a greedy sampler on the device, or take it away."""
        change = self._attached[slots] != device
        if not change.any():
            return
        lc = self._lc
        for slot, on in zip(slots[change].tolist(), device[change].tolist(), strict=True):
            chain = self._chains[slot]
            if on and chain is None:
                chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
                self._chains[slot] = chain
            if not lc.llama_set_sampler(self._ctx, slot, chain if on else None) and on:
                log.warning("llama.cpp cannot sample on the device; sampling on the host")
                self.device_sampling = False
                for held in np.flatnonzero(self._attached).tolist():
                    lc.llama_set_sampler(self._ctx, held, None)
                self._attached[:] = False
                return
            self._attached[slot] = on

    def remove(self, slot: int, start: int, end: int = -1) -> None:
        self._lc.llama_memory_seq_rm(self._memory, slot, start, end)

    def shift(self, slot: int, start: int, end: int, delta: int) -> None:
        self._lc.llama_memory_seq_add(self._memory, slot, start, end, delta)

    def copy_prefix(self, source: int, destination: int, length: int) -> None:
        if self.kv_unified:
            self._lc.llama_memory_seq_cp(self._memory, source, destination, 0, length)
            return
        # across streams llama.cpp copies only whole streams (any other range aborts)
        self._lc.llama_memory_seq_cp(self._memory, source, destination, -1, -1)
        self._lc.llama_memory_seq_rm(self._memory, destination, length, -1)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._eog[token])

    def constraint(self, fmt: Any) -> Constraint:
        return GrammarConstraint(self._lc, self._vocab, self.vocab_size, grammar_for(fmt))

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            size = self._lc.llama_token_to_piece(self._vocab, token, buffer, 64, 0, True)
            if size < 0:  # a longer piece than the buffer: -size is what it needs
                buffer = ctypes.create_string_buffer(-size)
                size = self._lc.llama_token_to_piece(self._vocab, token, buffer, -size, 0, True)
            piece = self._pieces[token] = buffer.raw[:size]
        return piece

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            tokens = (self._lc.llama_token * capacity)()
            n = self._lc.llama_tokenize(
                self._vocab, data, len(data), tokens, capacity, add_special, True
            )
            if n >= 0:
                return list(tokens[:n])
            capacity = -n  # too small a buffer: llama.cpp says how many tokens it needs

    def token_text(self, token: int) -> str:
        """A special token's text, e.g. the BOS and EOS strings chat templates refer to."""
        return self.token_bytes(token).decode("utf-8", errors="replace")

    @property
    def bos_token(self) -> int:
        return int(self._lc.llama_vocab_bos(self._vocab))

    @property
    def eos_token(self) -> int:
        return int(self._lc.llama_vocab_eos(self._vocab))

    def embed(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        return self._embedding_context().embed(tokens)

    @property
    def embed_limit(self) -> int:
        return self._embedding_context().num_ctx

    def _embedding_context(self) -> Embedder:
        if self._embedder is None:  # made on first use: chat-only models never pay for it
            size = min(self._num_ctx, _EMBED_CONTEXT)
            self._embedder = Embedder(self._lc, self._model, size, self.num_threads)
            self._adapters.apply(self._embedder.context)  # the model embeds as it generates
        return self._embedder

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._ctx:
            self._lc.llama_free(self._ctx)
            self._ctx = None
        for chain in self._chains:  # after the context that used them
            if chain is not None:
                self._lc.llama_sampler_free(chain)
        self._chains = [None] * len(self._chains)
        self._adapters.close()  # after the contexts, before the model
        if self._model:
            self._lc.llama_model_free(self._model)
            self._model = None
        # llama.cpp's logger is the process's: once this object (and the callback it keeps
        # alive) is gone, llama.cpp would call freed memory on its next line (a later model
        # loaded in the same process segfaulted so): give it back its own
        self._lc.llama_log_set(self._lc.llama_log_callback(0), ctypes.c_void_p(0))


class _NumpyBatch:
    """A llama_batch whose arrays are numpy buffers owned by Python (never llama_batch_free'd)."""

    def __init__(self, capacity: int, lc: object) -> None:
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.positions = np.zeros(capacity, dtype=np.int32)
        self.num_seq_ids = np.ones(capacity, dtype=np.int32)
        self.slots = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        # seq_id is an array of pointers, one per row, each to that row's single seq id: point
        # them into one contiguous buffer once, so a step writes all slots with one copy.
        seq_id_type = ctypes.POINTER(ctypes.c_int32)
        base = self.slots.ctypes.data
        self._seq_ptrs = (seq_id_type * capacity)(
            *(ctypes.cast(base + 4 * i, seq_id_type) for i in range(capacity))
        )
        self.struct = lc.llama_batch()  # type: ignore[attr-defined]
        self.struct.token = self.tokens.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.embd = None
        self.struct.pos = self.positions.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.n_seq_id = self.num_seq_ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = self._seq_ptrs
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def fill(self, batch: ForwardBatch) -> None:
        n = len(batch)
        self.tokens[:n] = batch.tokens
        self.positions[:n] = batch.positions
        self.slots[:n] = batch.slots
        self.logits[:n] = batch.want_logits
        self.struct.n_tokens = n
