"""The llama.cpp backend on the real SmolLM2 GGUF: batching, prefix sharing, a full cache."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig
from olla.engine.backend import ForwardBatch, KVCacheFull
from olla.engine.sequence import NewSequence
from olla.errors import InvalidRequest
from tests.conftest import REPO

PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was",
    "The three primary colors are",
    "def fibonacci(n):",
    "Water boils at",
    "The largest planet in our solar system is",
    "My favourite fruit is",
    "In 1969, astronauts",
]


@pytest.fixture(scope="module", params=[False, True], ids=["per-slot", "unified"])
def backend(smollm2_gguf: Path, request: pytest.FixtureRequest) -> Iterator[LlamaCppBackend]:
    b = LlamaCppBackend(
        LlamaCppConfig(
            model_path=smollm2_gguf,
            num_cells=2048,
            num_slots=8,
            num_threads=2,
            kv_unified=request.param,
        )
    )
    yield b
    b.close()


def test_the_layout_decides_what_one_slot_holds(backend: LlamaCppBackend) -> None:
    assert backend.num_cells == 2048
    assert backend.cells_per_slot == (2048 if backend.kv_unified else 256)


def prefill_rows(prompts: list[list[int]], slots: list[int]) -> ForwardBatch:
    return ForwardBatch(
        tokens=np.concatenate([np.array(p, np.int32) for p in prompts]),
        positions=np.concatenate([np.arange(len(p), dtype=np.int32) for p in prompts]),
        slots=np.concatenate(
            [np.full(len(p), s, np.int32) for p, s in zip(prompts, slots, strict=True)]
        ),
        want_logits=np.concatenate([np.arange(len(p)) == len(p) - 1 for p in prompts]),
    )


def greedy(backend: LlamaCppBackend, texts: list[str], steps: int = 10) -> list[list[int]]:
    """Greedy continuations of every text, all slots decoded together in each batch."""
    prompts = [backend.tokenize(t, add_special=True) for t in texts]
    slots = list(range(len(prompts)))
    outputs: list[list[int]] = [[] for _ in prompts]
    next_tokens = backend.decode(prefill_rows(prompts, slots)).argmax(axis=1)
    for step in range(steps):
        for out, token in zip(outputs, next_tokens, strict=True):
            out.append(int(token))
        batch = ForwardBatch(
            tokens=next_tokens.astype(np.int32),
            positions=np.array([len(p) + step for p in prompts], np.int32),
            slots=np.array(slots, np.int32),
            want_logits=np.ones(len(slots), bool),
        )
        next_tokens = backend.decode(batch).argmax(axis=1)
    for slot in slots:
        backend.remove(slot, 0)
    return outputs


def test_one_prompt_alone_equals_the_same_prompt_in_a_batch_of_8(backend: LlamaCppBackend) -> None:
    alone = greedy(backend, PROMPTS[:1])[0]
    together = greedy(backend, PROMPTS)
    assert together[0] == alone
    text = b"".join(backend.token_bytes(t) for t in alone).decode()  # whole characters
    assert text.strip()
    assert len({tuple(o) for o in together}) == len(PROMPTS)  # the rows really differ


def test_copy_prefix_shares_cells_without_recomputing(backend: LlamaCppBackend) -> None:
    prompt = backend.tokenize(PROMPTS[0], add_special=True)
    direct = backend.decode(prefill_rows([prompt], [0])).argmax(axis=1)[0]
    backend.copy_prefix(0, 1, len(prompt) - 1)  # slot 1 reuses all but the last token's cells
    last = ForwardBatch(
        np.array([prompt[-1]], np.int32),
        np.array([len(prompt) - 1], np.int32),
        np.array([1], np.int32),
        np.array([True]),
    )
    assert backend.decode(last).argmax(axis=1)[0] == direct
    backend.remove(0, 0)
    backend.remove(1, 0)


def rows(slot: int, start: int, count: int) -> ForwardBatch:
    return ForwardBatch(
        tokens=np.arange(100, 100 + count, dtype=np.int32),
        positions=np.arange(start, start + count, dtype=np.int32),
        slots=np.full(count, slot, np.int32),
        want_logits=np.arange(count) == count - 1,
    )


def test_a_full_cache_raises_and_leaves_the_cache_usable(backend: LlamaCppBackend) -> None:
    filled = backend.cells_per_slot - 100
    for start in range(0, filled, 256):
        backend.decode(rows(0, start, min(256, filled - start)))
    # 200 more cells from slot 0's stream: slot 1's in one pool, slot 0's own otherwise
    slot, start = (1, 0) if backend.kv_unified else (0, filled)
    with pytest.raises(KVCacheFull):
        backend.decode(rows(slot, start, 200))
    backend.remove(0, 0)
    backend.remove(1, 0)
    assert greedy(backend, PROMPTS[:1], steps=2)[0]  # all cells free again


def test_vocab_helpers(backend: LlamaCppBackend) -> None:
    assert backend.vocab_size == 49152
    assert backend.is_end_of_generation(backend.eos_token)
    assert not backend.is_end_of_generation(backend.tokenize("Paris", add_special=False)[0])
    assert backend.token_text(backend.eos_token) == "<|im_end|>"
    ids = backend.tokenize("<|im_start|>user", add_special=False)
    assert ids[0] == backend.tokenize("<|im_start|>", add_special=False)[0]  # special parsed


def test_a_json_schema_grammar_masks_and_ends_only_when_complete(backend: LlamaCppBackend) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    grammar = backend.constraint(schema)
    try:
        text = '{ "n": 42 }'
        for token in backend.tokenize(text, add_special=False):
            assert not grammar.allows(backend.eos_token)  # unfinished: no end yet
            assert grammar.allows(token), backend.token_text(token)
            grammar.accept(token)
        assert grammar.allows(backend.eos_token)
        logits = np.zeros(backend.vocab_size, dtype=np.float32)
        grammar.mask(logits)
        assert {int(t) for t in np.flatnonzero(np.isfinite(logits))} <= {
            t for t in range(backend.vocab_size) if backend.is_end_of_generation(t)
        } | set(backend.tokenize(" ", add_special=False))
    finally:
        grammar.close()


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("yaml", 'must be "json" or a JSON schema'),
        ({"$ref": "#/definitions/missing"}, "cannot follow this JSON schema"),
    ],
)
def test_formats_olla_cannot_follow_are_400s(
    backend: LlamaCppBackend, fmt: object, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        backend.constraint(fmt)
    assert caught.value.status == 400


def test_a_string_in_a_schema_takes_no_raw_newline(backend: LlamaCppBackend) -> None:
    grammar = backend.constraint({"type": "string", "maxLength": 30})
    try:
        for token in backend.tokenize('"Paris', add_special=False):
            grammar.accept(token)
        assert not grammar.allows(backend.tokenize("\n", add_special=False)[0])
        assert grammar.allows(backend.tokenize('"', add_special=False)[0])
    finally:
        grammar.close()


def test_greedy_rows_drawn_by_llama_cpp_match_the_host_sampler(smollm2_gguf: Path) -> None:
    """Backend sampling (argmax in llama.cpp's graph) gives the host's tokens; rows that need
    the host (penalties, log-probabilities) stay there, in the same batch."""
    from olla.engine.engine import Engine
    from olla.engine.sampling import Sampler, SamplingParams

    plain = SamplingParams(temperature=0, repeat_penalty=1.0)
    asks = [
        plain,
        SamplingParams(temperature=0, repeat_penalty=1.1),
        SamplingParams(temperature=0, repeat_penalty=1.0, logprobs=2),
        plain,
    ]
    outputs = []
    for device in (False, True):
        b = LlamaCppBackend(
            LlamaCppConfig(
                model_path=smollm2_gguf,
                num_cells=1024,
                num_slots=4,
                num_threads=2,
                device_sampling=device,
            )
        )
        try:
            engine = Engine(b, Sampler(b.vocab_size), max_num_seqs=4)
            prompts = [b.tokenize(p, True) for p in PROMPTS[: len(asks)]]
            ids = [engine.add(NewSequence(p, s, 24)) for p, s in zip(prompts, asks, strict=True)]
            tokens: dict[int, list[int]] = {i: [] for i in ids}
            device_rows = 0
            while engine.has_work:
                for out in engine.step():
                    tokens[out.seq_id] += out.token_ids
                drawn = b.sampled_tokens()
                device_rows += 0 if drawn is None else int((drawn >= 0).sum())
            outputs.append([tokens[i] for i in ids])
            assert (device_rows > 0) == device
            if device:
                assert device_rows == 2 * 24  # the two plain greedy sequences, every token
        finally:
            b.close()
    assert outputs[0] == outputs[1]
    assert all(len(t) == 24 for t in outputs[0])


def test_a_model_loaded_after_a_backend_closed_never_calls_its_freed_logger(
    smollm2_gguf: Path,
) -> None:
    # in a process of its own: before the fix, llama.cpp's next log line called the closed
    # backend's freed callback (an AttributeError there, or a segfault of pytest itself)
    script = f"""
import gc
import llama_cpp.llama_cpp as lc
from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig
path = {str(smollm2_gguf)!r}
backend = LlamaCppBackend(LlamaCppConfig(model_path=path, num_cells=256, num_slots=1))
backend.close()
del backend
gc.collect()
model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
print("loaded", bool(model))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0 and done.stdout.strip() == "loaded True", done.stderr[-2000:]
