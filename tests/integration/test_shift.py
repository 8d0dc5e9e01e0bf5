"""Context shift and prompt truncation through a real daemon on the SmolLM2 GGUF: a raw
/api/generate prompt (no template) with a context of 256 tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

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
