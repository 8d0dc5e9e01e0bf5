"""How much memory a model will take, from its GGUF before loading, and what it took, after.

The estimate has llama.cpp's four buffers: the weights (every tensor's bytes, per layer so that
a partial GPU offload can be sized), the KV cache (a stream per sequence, each `num_ctx` cells
rounded up to 256, of keys and values for every layer), the output buffer (a row of logits per
sequence) and the compute buffer (the largest set of a step's intermediate tensors: the logits
of a whole batch, or without flash attention the attention scores of a batch over a context).
After the load the runner reports the sizes llama.cpp itself allocated (the backend's
`parse_buffer_sizes`). A model's LoRA adapters count as weights, each tensor in the layer of the
weight it changes, since llama.cpp allocates it beside that weight (`with_adapters`). A vision
projector counts its weights and its encode buffer, on the GPU with the model or in RAM without
it (`with_projector`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from olla.backends.choice import EXL2_PAGE
from olla.memory import Memory
from olla.registry.gguf_info import GGUFInfo, read_gguf_info
from olla.registry.model_dir import CONFIG, DirInfo, read_dir_info

_STREAM_PAD = 256  # llama.cpp rounds each stream's cells up to this
_CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a GGUF's metadata and tensors."""

    layers: int
    embedding: int
    heads: int
    kv_heads: int
    key_length: int
    value_length: int
    feed_forward: int
    vocab: int
    layer_weights: tuple[int, ...]  # bytes of blk.N.* for each N
    input_weights: int = 0  # token_embd: stays in RAM even when everything is offloaded
    head_weights: int = 0  # output.weight; 0 when tied to token_embd
    norm_weights: int = 0  # output_norm
    other_weights: int = 0  # anything else outside the blocks
    context_length: int | None = None  # trained for: caps the automatic num_ctx
    projector: ProjectorShape | None = None  # a vision projector, loaded beside the model

    @classmethod
    def from_gguf(cls, info: GGUFInfo) -> ModelShape:
        arch, meta = info.architecture, info.metadata
        layers = info.block_count or 0
        heads = info.head_count or 1
        embedding = info.embedding_length or 0
        per_layer = [0] * layers
        outside: dict[str, int] = {}
        for name, size in info.tensor_bytes.items():
            match = _LAYER.match(name)
            if match and int(match.group(1)) < layers:
                per_layer[int(match.group(1))] += size
            else:
                outside[name] = size
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = _int(meta.get(f"{arch}.vocab_size"))
        if vocab is None:
            vocab = len(tokens) if isinstance(tokens, list) else 0
        head_dim = embedding // heads if heads else 0
        special = {"token_embd.weight", "output.weight", "output_norm.weight"}
        return cls(
            layers=layers,
            embedding=embedding,
            heads=heads,
            kv_heads=info.head_count_kv or heads,
            key_length=_int(meta.get(f"{arch}.attention.key_length")) or head_dim,
            value_length=_int(meta.get(f"{arch}.attention.value_length")) or head_dim,
            feed_forward=_int(meta.get(f"{arch}.feed_forward_length")) or 4 * embedding,
            vocab=vocab,
            layer_weights=tuple(per_layer),
            input_weights=outside.get("token_embd.weight", 0),
            head_weights=outside.get("output.weight", 0),
            norm_weights=outside.get("output_norm.weight", 0),
            other_weights=sum(v for k, v in outside.items() if k not in special),
            context_length=info.context_length,
        )

    def plus_tensors(self, tensor_bytes: Mapping[str, int]) -> ModelShape:
        """This shape with more tensors (an adapter's): `blk.N.*` in layer N, the rest outside
        the blocks (in RAM, as the input embeddings are; a LoRA of the output head would sit on
        the GPU with it, which this does not count)."""
        per_layer = list(self.layer_weights)
        other = self.other_weights
        for name, size in tensor_bytes.items():
            match = _LAYER.match(name)
            if match and int(match.group(1)) < self.layers:
                per_layer[int(match.group(1))] += size
            else:
                other += size
        return replace(self, layer_weights=tuple(per_layer), other_weights=other)

    @property
    def output_layer(self) -> int:
        """Bytes of the output layer on a GPU: its head (token_embd's copy when tied), its norm."""
        return (self.head_weights or self.input_weights) + self.norm_weights


@dataclass(frozen=True)
class ProjectorShape:
    """What the estimate needs of a vision projector (an mmproj GGUF): its weights, and the
    sizes of the encoder pass that libmtmd's warmup reserves its compute buffer for (the
    largest image: `image_size` squared, in `patch_size` patches)."""

    weights: int
    patches: int
    embedding: int
    feed_forward: int
    heads: int

    @classmethod
    def from_gguf(cls, info: GGUFInfo) -> ProjectorShape:
        meta = info.metadata
        prefix = f"{info.architecture}.vision"

        def size(key: str) -> int:
            return _int(meta.get(f"{prefix}.{key}")) or 0

        patch = size("patch_size")
        side = size("image_size") // patch if patch else 0
        return cls(
            weights=sum(info.tensor_bytes.values()),
            patches=side * side,
            embedding=size("embedding_length"),
            feed_forward=size("feed_forward_length"),
            heads=size("attention.head_count") or 1,
        )

    def compute(self, flash_attention: bool) -> int:
        """clip.cpp's compute buffer for one image: the feed-forward activations of every patch
        and, with flash attention, three rows of the encoder's width (Q, K, V); without it the
        attention scores of every head instead. For SmolVLM-256M's encoder (1024 patches, 768
        wide, 12 heads, 3072 feed-forward) this gives 21.0 and 60.0 MiB, what libmtmd reserved
        on the CPU with flash attention on and off (llama-cpp-python 0.3.36)."""
        activations = self.patches * self.feed_forward * 4
        if flash_attention:
            return activations + self.patches * self.embedding * 4 * 3
        return activations + self.patches * self.patches * self.heads * 4


def with_projector(shape: ModelShape, projector_path: str) -> ModelShape:
    """`shape` with its vision projector, read from the projector's GGUF tensor infos."""
    return replace(shape, projector=ProjectorShape.from_gguf(read_gguf_info(projector_path)))


def with_adapters(shape: ModelShape, adapter_paths: Sequence[str]) -> ModelShape:
    """`shape` with its LoRA adapters' tensors, read from their GGUF tensor infos (not data)."""
    for path in adapter_paths:
        shape = shape.plus_tensors(read_gguf_info(path).tensor_bytes)
    return shape


def estimate(
    shape: ModelShape,
    num_ctx: int,
    num_parallel: int,
    cache_type: str = "f16",
    batch_tokens: int = 512,
    flash_attention: bool = False,
    gpu_layers: int = 0,
) -> Memory:
    """The memory a runner will take for this model and load; `gpu` is the part offloaded.

    `gpu_layers` counts as llama.cpp's n_gpu_layers does, from the output end: 1 is the output
    layer, each more is one more block (the last ones), `layers + 1` is everything.
    """
    cells_per_stream = -(-num_ctx // _STREAM_PAD) * _STREAM_PAD
    cell_bytes = (shape.key_length + shape.value_length) * shape.kv_heads * _CACHE_BYTES[cache_type]
    kv_per_layer = int(cells_per_stream * num_parallel * cell_bytes)
    output = shape.vocab * num_parallel * 4
    # Peak of a step's intermediates: a batch's logits, or its attention scores over a whole
    # stream (plus the mask and the feed-forward activations) when flash attention is off.
    logits = shape.vocab * batch_tokens * 4 * 1.035
    attention = cells_per_stream * batch_tokens * 4 * (1 + (0 if flash_attention else shape.heads))
    attention += batch_tokens * shape.feed_forward * 4 * 2
    compute = int(max(logits, attention))
    blocks = min(max(gpu_layers - 1, 0), shape.layers)  # blocks on the GPU
    on_gpu = sum(shape.layer_weights[shape.layers - blocks :])
    in_ram = sum(shape.layer_weights[: shape.layers - blocks])
    in_ram += shape.input_weights + shape.other_weights
    gpu = 0
    host_compute = compute
    if gpu_layers > 0:
        # The output layer goes first (its own copy of token_embd when tied); the GPU runs the
        # whole graph, the host keeps a small buffer for the input embeddings (12 MiB for a
        # 1B model at 512 tokens on an H100).
        on_gpu += shape.output_layer
        host_compute = batch_tokens * shape.embedding * 4 * 3
        gpu = on_gpu + kv_per_layer * blocks + compute
    else:
        in_ram += shape.head_weights + shape.norm_weights
    memory = Memory(
        weights=in_ram + on_gpu,
        kv_cache=kv_per_layer * shape.layers,
        compute=host_compute + (compute if gpu_layers > 0 else 0),
        output=output,
        gpu=gpu,
    )
    return _with_projector(memory, shape.projector, flash_attention, gpu_layers > 0)


def _with_projector(
    memory: Memory, projector: ProjectorShape | None, flash_attention: bool, on_gpu: bool
) -> Memory:
    """`memory` and a vision projector's weights and encode buffer, where the runner puts them:
    on the GPU when the model has layers there (libmtmd's `use_gpu`), else in RAM."""
    if projector is None:
        return memory
    compute = projector.compute(flash_attention)
    return replace(
        memory,
        weights=memory.weights + projector.weights,
        compute=memory.compute + compute,
        gpu=memory.gpu + (projector.weights + compute if on_gpu else 0),
    )


@dataclass(frozen=True)
class DirShape:
    """What the estimate needs of a directory model (exllamav2): its config and weights."""

    info: DirInfo
    weights: int  # bytes of its safetensors files

    @classmethod
    def from_directory(cls, directory: Path) -> DirShape:
        info = read_dir_info((directory / CONFIG).read_bytes(), str(directory))
        size = sum(p.stat().st_size for p in directory.rglob("*.safetensors"))
        return cls(info, size)


Shape = ModelShape | DirShape

EXL2_CHUNK = 2048  # exllamav2's max_input_len: the most tokens one forward takes
EXL2_ATTENTION = 2048**2  # its max_attention_size: attention weights one forward may hold


def estimate_directory(shape: DirShape, num_ctx: int, num_parallel: int, paged: bool) -> Memory:
    """The memory an exllamav2 runner takes, as exllamav2 allocates it.

    The weights as stored, all on the GPU but the token embeddings (in RAM; a tied model's head
    is a copy of them on the GPU); an FP16 cache of `num_ctx` tokens per sequence (paged: every
    sequence; unpaged, without flash-attn: one); and the scratch exllamav2 reserves for a
    forward of a whole chunk: the head's FP32 logits and dequantized weights, the attention
    weights, the layers' activations. On an H100 (docs/gpu.md) this came to 0.95 of what the
    runner measured for SmolLM2-135M's shape.
    """
    info = shape.info
    streams = num_parallel if paged else 1
    tokens = -(-num_ctx * streams // EXL2_PAGE) * EXL2_PAGE
    kv_cache = tokens * info.kv_bytes_per_token
    head = info.vocab * info.embedding
    activations = EXL2_CHUNK * (4 * info.embedding + 3 * info.feed_forward) * 2
    compute = EXL2_CHUNK * info.vocab * 4 + head * 2 + EXL2_ATTENTION * info.heads * 2 + activations
    embeddings = info.embedding_bytes
    gpu_weights = shape.weights if info.tied_embeddings else shape.weights - embeddings
    return Memory(
        weights=gpu_weights + embeddings,
        kv_cache=kv_cache,
        compute=compute,
        output=0,
        gpu=gpu_weights + kv_cache + compute,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
