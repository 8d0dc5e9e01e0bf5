"""Which GGUF is a vision projector, and which of a repo's projectors a pull takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest

from olla.registry.gguf_info import read_gguf_info
from olla.registry.projector import choose_projector, is_projector, precision_bits, quant_tag
from tests.registry.test_gguf_info import write_gguf
from tests.tiny_projector import write_projector


@dataclass(frozen=True)
class File:
    path: str


def test_an_mmproj_file_is_a_projector_with_or_without_its_general_type(tmp_path: Path) -> None:
    assert is_projector(read_gguf_info(write_projector(tmp_path / "a.gguf")))
    older = write_projector(tmp_path / "b.gguf", general_type=False)
    assert is_projector(read_gguf_info(older))


def test_a_language_model_is_not_one_even_with_a_vision_tower(tmp_path: Path) -> None:
    assert not is_projector(read_gguf_info(write_gguf(tmp_path / "m.gguf")))

    def vision(w: gguf.GGUFWriter) -> None:  # gemma3 in Ollama's own format: one file
        w.add_uint32("llama.vision.block_count", 27)

    assert not is_projector(read_gguf_info(write_gguf(tmp_path / "v.gguf", extra=vision)))


def test_an_encoder_without_language_blocks_is_one(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "e.gguf", "mllama")  # Ollama's split llama3.2-vision
    w.add_uint32("mllama.vision.block_count", 32)
    w.add_tensor("v.patch_embd.weight", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert is_projector(read_gguf_info(tmp_path / "e.gguf"))


@pytest.mark.parametrize(
    ("path", "tag", "bits"),
    [
        ("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M", 4),
        ("mmproj-SmolVLM-256M-Instruct-Q8_0.gguf", "Q8_0", 8),
        ("mmproj-model-f16.gguf", "F16", 16),
        ("sub/mmproj-BF16.gguf", "BF16", 16),
        ("model.Q4_1.gguf", "Q4_1", 4),
        ("big-Q5_K_M-00001-of-00003.gguf", "Q5_K_M", 5),
        ("mmproj.gguf", "", 0),
    ],
)
def test_the_quantization_tag_of_a_file_name(path: str, tag: str, bits: int) -> None:
    assert (quant_tag(path), precision_bits(path)) == (tag, bits)


THREE = [File("mmproj-BF16.gguf"), File("mmproj-F16.gguf"), File("mmproj-Q8_0.gguf")]


@pytest.mark.parametrize(
    ("model", "chosen"),
    [
        ("m-Q8_0.gguf", "mmproj-Q8_0.gguf"),  # its own precision
        ("m-F16.gguf", "mmproj-F16.gguf"),  # its own tag, though BF16 is as wide
        ("m-BF16.gguf", "mmproj-BF16.gguf"),
        ("m-Q4_K_M.gguf", "mmproj-Q8_0.gguf"),  # the nearest width: 8 bits from 4
        ("m-F32.gguf", "mmproj-BF16.gguf"),  # 16 from 32, the first by name of two
    ],
)
def test_the_projector_nearest_the_models_precision(model: str, chosen: str) -> None:
    found = choose_projector(THREE, model)
    assert found is not None and found.path == chosen


def test_a_projector_in_another_models_directory_is_not_taken() -> None:
    files = [File("a/mmproj-F16.gguf"), File("b/model-F16.gguf"), File("mmproj-Q8_0.gguf")]
    found = choose_projector(files, "b/model-F16.gguf")
    assert found is not None and found.path == "mmproj-Q8_0.gguf"  # the root's is shared
    files.append(File("b/mmproj-Q4_0.gguf"))
    found = choose_projector(files, "b/model-F16.gguf")
    assert found is not None and found.path == "b/mmproj-Q4_0.gguf"  # its own directory's first


def test_a_repo_without_one_gives_none() -> None:
    assert choose_projector([File("m-Q8_0.gguf"), File("README.md")], "m-Q8_0.gguf") is None
