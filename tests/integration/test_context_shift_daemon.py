"""Context shift and prompt truncation on the SmolLM2 GGUF: through a real daemon (a raw
/api/generate prompt, no template, with a context of 256 tokens), and olla's engine over the real
llama.cpp backend in both cache layouts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig
from olla.engine.engine import Engine
from olla.engine.sampling import Sampler, SamplingParams
from olla.engine.sequence import NewSequence
from tests.conftest import Daemon
from tests.daemon_helpers import create_tiny

CTX = 256
# counting goes on without an end-of-generation token, where a story might stop
COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,"


async def generate(d: Daemon, prompt: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    """One /api/generate of `tiny`, not streamed: the status and the body."""
    options = {"num_ctx": CTX, "temperature": 0, **fields.pop("options", {})}
    body = {"model": "tiny", "prompt": prompt, "raw": True, "stream": False, "options": options}
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post("/api/generate", json={**body, **fields}) as r:
            return r.status, await r.json()


async def test_generation_passes_the_context_beside_other_streams_as_it_does_alone(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    requests = [  # (prompt, num_predict): the first shifts twice, the second once
        (COUNT, 400),
        ("Once upon a time, in a small village by the sea,", 300),
        ("def fibonacci(n):", 200),
        ("The three primary colors are", 60),
    ]
    alone = [await generate(daemon, p, options={"num_predict": n}) for p, n in requests]
    together = await asyncio.gather(
        *(generate(daemon, p, options={"num_predict": n}) for p, n in requests)
    )
    for (prompt, num_predict), (status, one), (status_b, batched) in zip(
        requests, alone, together, strict=True
    ):
        assert status == status_b == 200, (one, batched)
        if num_predict > CTX:  # past the context: it shifted and went on
            assert (one["done_reason"], one["eval_count"]) == ("length", num_predict), prompt
        # the whole output, token for token, as alone: the shifts fell at the same points
        assert batched["context"] == one["context"], prompt
        assert batched["response"] == one["response"]
        assert batched["done_reason"] == one["done_reason"]
        assert len(one["context"]) == one["prompt_eval_count"] + one["eval_count"]


async def test_shift_false_ends_at_the_context_with_length(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    status, body = await generate(daemon, COUNT, shift=False, options={"num_predict": 400})
    assert status == 200, body
    assert body["done_reason"] == "length"
    assert body["prompt_eval_count"] + body["eval_count"] == CTX


async def test_a_prompt_longer_than_the_context_is_cut_or_refused(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    long = " ".join(f"{i}," for i in range(1, 400))  # well over 256 tokens
    status, body = await generate(daemon, long, options={"num_predict": 8})
    assert status == 200, body
    # the first 4 tokens and the latest, 256 - (256 - 4) // 2 = 130 in all (Ollama's limit)
    assert body["prompt_eval_count"] == CTX - (CTX - 4) // 2
    assert body["eval_count"] == 8 and body["response"].strip()
    status, body = await generate(daemon, long, truncate=False, options={"num_predict": 8})
    assert status == 400
    assert "more than the context of 256" in body["error"]


def engine_on(gguf: Path, unified: bool, ctx: int) -> Engine:
    """olla's engine over the real llama.cpp backend, 4 streams of `ctx`, as a runner builds it."""
    backend = LlamaCppBackend(
        LlamaCppConfig(model_path=gguf, num_cells=4 * ctx, num_slots=4, kv_unified=unified)
    )
    return Engine(backend, Sampler(backend.vocab_size), max_num_seqs=4, max_model_len=ctx)


def run(engine: Engine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    params = SamplingParams(temperature=0)
    ids = [engine.add(NewSequence(p, params, max_tokens, shift=True)) for p in prompts]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    while engine.has_work:
        for out in engine.step():
            tokens[out.seq_id] += out.token_ids
            assert not out.error
        engine.block_manager.check()
    bm = engine.block_manager
    assert bm.num_used_blocks == 0 and bm.num_free_blocks + bm.num_evictable_blocks == bm.num_blocks
    return [tokens[i] for i in ids]


def test_the_unified_cache_shifts_as_a_stream_per_slot_does(smollm2_gguf: Path) -> None:
    engines = [engine_on(smollm2_gguf, unified, CTX) for unified in (False, True)]
    engines.append(engine_on(smollm2_gguf, True, 128))
    try:
        prompt = engines[0].backend.tokenize(COUNT, add_special=True)
        per_slot, unified = (run(e, [prompt], 400)[0] for e in engines[:2])
        assert len(per_slot) == 400 and engines[0].scheduler.num_shifts == 2
        assert unified == per_slot  # one stream: the same cells moved the same way
        # two streams share a prefix past num_keep + half the context: in the unified cache
        # its cells cannot move, so they recompute their context at the shift
        base = [*prompt, *prompt[1:], *prompt[1:]]
        assert 4 + (128 - 4) // 2 < len(base) - 16 < 128 - 16
        run(engines[2], [base, [*base, base[-1]]], 40)
        assert engines[2].scheduler.num_shift_recomputes > 0
    finally:
        for engine in engines:
            engine.backend.close()
