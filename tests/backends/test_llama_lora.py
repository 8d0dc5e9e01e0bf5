"""LoRA adapters in the llama.cpp backend, on the real SmolLM2 GGUF.

The adapters come from scripts/synthetic_lora: random low-rank weights. They test the
mechanics (loaded, applied to every context, counted, freed, refused with llama.cpp's reason),
not what an adapter teaches a model.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig
from olla.errors import ModelLoadError
from tests.backends.test_llama_cpp_backend import greedy
from tests.registry.test_adapter_check import write as write_adapter

REPO = Path(__file__).resolve().parents[2]
PROMPT = "The capital of France is"


def synthetic_lora(out: Path, *args: str) -> Path:
    command = [sys.executable, "scripts/synthetic_lora", "--out", str(out), *args]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return out


def load(model: Path, *adapters: Path) -> LlamaCppBackend:
    config = LlamaCppConfig(
        model_path=model, num_cells=512, num_slots=1, num_threads=2, adapter_paths=adapters
    )
    return LlamaCppBackend(config)


@pytest.fixture(scope="module")
def lora(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_lora(tmp_path_factory.mktemp("lora") / "lora.gguf")


@pytest.fixture(scope="module")
def adapted(smollm2_gguf: Path, lora: Path) -> Iterator[LlamaCppBackend]:
    backend = load(smollm2_gguf, lora)
    yield backend
    backend.close()


def test_an_adapter_moves_greedy_output_and_a_model_without_it_does_not_move(
    smollm2_gguf: Path, adapted: LlamaCppBackend
) -> None:
    base = load(smollm2_gguf)
    try:
        before = greedy(base, [PROMPT])
        with_adapter = greedy(adapted, [PROMPT])
        again = greedy(base, [PROMPT])  # the adapter lives in its own model and context
    finally:
        base.close()
    assert with_adapter != before
    assert again == before


def test_two_adapters_apply_together(
    smollm2_gguf: Path, adapted: LlamaCppBackend, lora: Path, tmp_path: Path
) -> None:
    other = synthetic_lora(tmp_path / "other.gguf", "--seed", "1", "--targets", "attn_v")
    second_only = load(smollm2_gguf, other)
    both = load(smollm2_gguf, lora, other)
    try:
        outputs = [greedy(b, [PROMPT]) for b in (adapted, second_only, both)]
    finally:
        second_only.close()
        both.close()
    assert outputs[2] != outputs[0] and outputs[2] != outputs[1]


def test_the_adapter_applies_to_embeddings_too(
    smollm2_gguf: Path, adapted: LlamaCppBackend
) -> None:
    base = load(smollm2_gguf)
    try:
        plain = base.embed(base.tokenize(PROMPT, add_special=True))
    finally:
        base.close()
    changed = adapted.embed(adapted.tokenize(PROMPT, add_special=True))
    assert plain.shape == changed.shape
    assert not np.allclose(plain, changed, atol=1e-3)


def test_the_adapter_counts_as_weights_in_what_llama_cpp_allocated(
    smollm2_gguf: Path, adapted: LlamaCppBackend, lora: Path
) -> None:
    base = load(smollm2_gguf)
    try:
        extra = adapted.memory.weights - base.memory.weights
    finally:
        base.close()
    # its tensors' bytes, as llama.cpp rounds each buffer's size in its log (2 decimals of MiB)
    tensors = lora.stat().st_size
    assert tensors * 0.9 < extra <= tensors


def test_an_adapter_llama_cpp_refuses_is_a_load_error_with_its_reason(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    # passes no create check (another architecture's), as if the store had been edited by hand
    wrong = write_adapter(tmp_path / "wrong.gguf", {}, arch="qwen2")
    with pytest.raises(ModelLoadError) as caught:
        load(smollm2_gguf, wrong)
    assert str(caught.value) == (
        "LoRA adapter wrong.gguf could not be loaded: failed to apply lora adapter: "
        "model arch and LoRA arch mismatch"
    )
    assert caught.value.status == 500
