"""Loading an EXL2 (or unquantized safetensors) model directory with exllamav2, for the runner.

`load` builds the model, its cache, tokenizer and dynamic generator, and returns the two halves
the runner drives: an `Exl2Model` (tokenizer, memory report; what the runner asks of a llama.cpp
backend beside decoding) and a `GeneratorEngine` over the generator. Needs torch with CUDA and
exllamav2 (`pip install 'olla[exl2]'`); imported only by a runner that loads such a model.

Without flash-attn exllamav2 refuses a paged cache ("Paged attention required Flash Attention
2.5.7 or later"), so the generator is then unpaged and runs one sequence at a time (docs/gpu.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from olla.backends.choice import EXL2_PAGE
from olla.backends.exllamav2 import FORMAT_UNSUPPORTED, GeneratorEngine
from olla.engine.constraint import Constraint
from olla.errors import InvalidRequest, ModelLoadError
from olla.memory import Memory
from olla.registry.model_dir import CONFIG, read_dir_info

log = logging.getLogger(__name__)


class Exl2Model:
    """A loaded exllamav2 model's tokenizer and memory, as the runner uses a backend's."""

    can_shift = False  # exllamav2's generator has no context shift

    def __init__(self, model: Any, tokenizer: Any, vocab_size: int, memory: Memory) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.memory = memory

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """Token ids of `text`, special tokens written in it parsed as such."""
        ids = self.tokenizer.encode(text, add_bos=add_special, encode_special_tokens=True)
        return [int(t) for t in ids[0].tolist()]

    def token_bytes(self, token: int) -> bytes:
        """The text a token stands for (logprobs are refused, so this serves messages only)."""
        return str(self.tokenizer.get_id_to_piece_list(True)[token]).encode()

    @property
    def embed_limit(self) -> int:
        return 0

    def embed(self, tokens: list[int]) -> Any:
        raise InvalidRequest("embeddings are not supported by exllamav2 models; use a GGUF model")

    def constraint(self, fmt: Any) -> Constraint:
        raise InvalidRequest(FORMAT_UNSUPPORTED)

    def close(self) -> None:
        self.model.unload()


def stop_tokens(directory: Path, tokenizer: Any) -> list[int]:
    """Every end-of-generation id: the tokenizer's EOS, config.json's and generation_config's."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    for name in (CONFIG, "generation_config.json"):
        try:
            value = json.loads((directory / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int):
                ids.add(token)
    return sorted(ids)


def load(directory: Path, num_ctx: int, num_parallel: int) -> tuple[Exl2Model, GeneratorEngine]:
    """Load a model directory on the GPU, with a cache of `num_ctx` tokens for each of
    `num_parallel` sequences; ModelLoadError says what went wrong."""
    try:
        import exllamav2.attn
        import torch
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import (
            ExLlamaV2DynamicGenerator,
            ExLlamaV2DynamicJob,
            ExLlamaV2Sampler,
        )
    except ImportError as exc:
        message = f"exllamav2 cannot be imported ({exc}); pip install 'olla[exl2]'"
        raise ModelLoadError(message) from None
    if not torch.cuda.is_available():
        raise ModelLoadError("exllamav2 needs a CUDA GPU, and PyTorch sees none")
    info = read_dir_info((directory / CONFIG).read_bytes(), str(directory))
    paged = bool(exllamav2.attn.has_flash_attn)
    streams = num_parallel if paged else 1
    tokens = -(-num_ctx * streams // EXL2_PAGE) * EXL2_PAGE

    config = ExLlamaV2Config(str(directory))
    config.max_seq_len = num_ctx
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=tokens, lazy=True)
    before = torch.cuda.memory_allocated()
    model.load_autosplit(cache)
    loaded = torch.cuda.memory_allocated() - before
    tokenizer = ExLlamaV2Tokenizer(config)
    generator = ExLlamaV2DynamicGenerator(
        model=model, cache=cache, tokenizer=tokenizer, max_batch_size=streams, paged=paged
    )
    generator.warmup()
    peak = torch.cuda.max_memory_allocated() - before
    kv_cache = sum(t.numel() * t.element_size() for t in [*cache.key_states, *cache.value_states])
    memory = Memory(
        weights=loaded - kv_cache + info.embedding_bytes,  # the embeddings are in RAM
        kv_cache=kv_cache,
        compute=max(peak - loaded, 0),
        gpu=peak,
    )
    log.info(
        "exllamav2 loaded",
        extra={"paged": paged, "streams": streams, "cache_tokens": tokens, "gpu_bytes": peak},
    )
    log.info("exllamav2 has no context shift: a sequence that fills its context ends there")

    def make_job(ids: list[int], settings: dict[str, Any], options: dict[str, Any]) -> Any:
        gen_settings = ExLlamaV2Sampler.Settings()
        for name, value in settings.items():
            setattr(gen_settings, name, value)
        input_ids = torch.tensor([ids], dtype=torch.long)
        return ExLlamaV2DynamicJob(input_ids=input_ids, gen_settings=gen_settings, **options)

    engine = GeneratorEngine(
        generator, make_job, stop_tokens(directory, tokenizer), max_model_len=num_ctx
    )
    host = Exl2Model(model, tokenizer, info.vocab, memory)
    return host, engine
