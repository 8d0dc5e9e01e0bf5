"""Facts read from a model file: which embedding models Ollama's /api/embeddings leaves raw."""

from __future__ import annotations

import pytest

from olla.registry.facts import raw_legacy_embeddings


@pytest.mark.parametrize(
    ("arch", "meta", "raw"),
    [
        ("llama", {}, False),  # a chat model: normalised
        ("bert", {"bert.pooling_type": 1}, False),
        ("bert", {"bert.pooling_type": 1, "tokenizer.ggml.model": "gpt2"}, True),
        ("bert", {"bert.pooling_type": 1, "bert.normalize_embeddings": False}, True),
        ("nomic-bert", {"nomic-bert.pooling_type": 1}, True),
        (
            "nomic-bert",
            {"nomic-bert.pooling_type": 1, "nomic-bert.normalize_embeddings": True},
            False,
        ),
        ("nomic-bert", {}, False),  # no pooling: not an embedding model
        ("qwen3", {"qwen3.pooling_type": 3}, False),
    ],
)
def test_which_models_older_embeddings_give_raw(
    arch: str, meta: dict[str, object], raw: bool
) -> None:
    assert raw_legacy_embeddings(arch, meta) is raw
