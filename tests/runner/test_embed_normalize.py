"""Embeddings come from the backend as the model pools them; the runner normalises them unless
a request (Ollama's older /api/embeddings, for some models) asks for them raw."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig
from olla.runner.intake import unit


def test_pooled_vectors_are_raw_and_the_runner_makes_them_unit_length(smollm2_gguf: Path) -> None:
    backend = LlamaCppBackend(
        LlamaCppConfig(model_path=smollm2_gguf, num_cells=256, num_slots=1, num_threads=1)
    )
    try:
        pooled = backend.embed(backend.tokenize("The cat sits on the mat.", add_special=True))
    finally:
        backend.close()
    assert abs(float(np.linalg.norm(pooled)) - 1) > 0.01  # SmolLM2's mean-pooled vector is not
    scaled = unit(pooled)
    assert abs(float(np.linalg.norm(scaled)) - 1) < 1e-5
    assert np.allclose(scaled * np.linalg.norm(pooled), pooled, atol=1e-5)
    assert np.array_equal(unit(np.zeros(3, dtype=np.float32)), np.zeros(3, dtype=np.float32))
