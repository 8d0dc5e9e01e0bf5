"""Directory models (EXL2, safetensors): what config.json and tokenizer_config.json say."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from olla.errors import InvalidRequest, NotSupported
from olla.registry.model_dir import chat_format, check_files, read_dir_info, wanted_file
from olla.runtime.estimate import DirShape, estimate_directory
from olla.runtime.placement import LoadPlan, place_directory
from tests.model_dirs import CHAT_TEMPLATE, LLAMA_CONFIG, model_files, write_model_dir


def test_an_exl2_config_gives_format_bits_and_shape() -> None:
    info = read_dir_info(model_files()["config.json"])
    assert (info.model_format, info.file_type, info.family) == ("exl2", "4.0bpw", "llama")
    assert (info.layers, info.kv_heads, info.head_dim, info.vocab) == (30, 3, 64, 49152)
    assert info.parameter_size == "135M"  # SmolLM2-135M's shape: 134.5M parameters
    assert info.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2
    assert info.model_info()["llama.block_count"] == 30


def test_an_unquantized_config_is_safetensors_in_its_dtype() -> None:
    info = read_dir_info(model_files(exl2=False)["config.json"])
    assert (info.model_format, info.file_type) == ("safetensors", "BF16")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (json.dumps({**LLAMA_CONFIG, "hidden_size": None}).encode(), "lacks 'hidden_size'"),
        (json.dumps({**LLAMA_CONFIG, "num_hidden_layers": "30"}).encode(), "positive integer"),
        (
            json.dumps({**LLAMA_CONFIG, "quantization_config": {"quant_method": "gptq"}}).encode(),
            "gptq quantization is not supported",
        ),
    ],
)
def test_a_bad_config_is_named(config: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        read_dir_info(config)
    assert fragment in str(info.value)


def test_which_files_belong_to_a_model() -> None:
    assert all(wanted_file(n) for n in model_files())
    assert wanted_file("sub/tokenizer.model") and wanted_file("chat_template.jinja")
    others = ["README.md", ".gitattributes", "pytorch_model.bin", "m.gguf", "../x.json"]
    others += [".cache/x.json", "image.png", "modeling_x.py", "/etc/x.json", "a\\b.json"]
    for name in others:
        assert not wanted_file(name), name


def test_check_files_says_what_is_missing() -> None:
    check_files(model_files(), "here")
    with pytest.raises(InvalidRequest) as nested:  # exllamav2 reads config.json at the top
        check_files(["sub/config.json", "tokenizer.json", "m.safetensors"], "here")
    assert "lacks config.json" in str(nested.value)
    with pytest.raises(InvalidRequest) as info:
        check_files(["README.md", "tokenizer.json"], "hf.co/o/r")
    message = str(info.value)
    assert "hf.co/o/r" in message and "config.json" in message and "*.safetensors" in message


def test_chat_format_from_tokenizer_config(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    assert chat_format(directory) == (CHAT_TEMPLATE, "<|im_start|>", "<|im_end|>")
    named = {
        "chat_template": [
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "D"},
        ]
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(named))
    assert chat_format(directory) == ("D", "", "")
    (directory / "chat_template.jinja").write_text("J")  # newer transformers save it apart
    assert chat_format(directory)[0] == "J"
    assert chat_format(tmp_path) == (None, "", "")


def test_memory_estimate_of_an_exl2_model(tmp_path: Path) -> None:
    weights = b"\0" * (80 * 2**20)
    shape = DirShape.from_directory(write_model_dir(tmp_path / "m", model_files(weights=weights)))
    assert shape.weights == len(weights)
    memory = estimate_directory(shape, num_ctx=1000, num_parallel=4, paged=True)
    # 4 x 1000 tokens, in 256-token pages: 4096 tokens of FP16 keys and values
    assert memory.kv_cache == 4096 * 2 * 30 * 3 * 64 * 2
    embeddings = 49152 * 576 * 2  # in RAM; the tied head is their copy on the GPU
    assert memory.gpu == len(weights) + memory.kv_cache + memory.compute
    assert memory.total == len(weights) + embeddings + memory.kv_cache + memory.compute
    # On the H100 the runner measured 762,847,744 bytes on the GPU for this shape at 4.0 bpw
    # (132,828,928 bytes of safetensors), unpaged, num_ctx 1024: the estimate is within 10%.
    measured = DirShape(shape.info, 132_828_928)
    alone = estimate_directory(measured, num_ctx=1024, num_parallel=32, paged=False)
    assert alone.kv_cache == 1024 * 2 * 30 * 3 * 64 * 2  # one sequence's
    assert 0.9 <= alone.gpu / 762_847_744 <= 1.1
    untied = DirShape(replace(shape.info, tied_embeddings=False), shape.weights)
    assert estimate_directory(untied, 1000, 4, True).gpu == memory.gpu - embeddings
    plan = LoadPlan(1000, 4, "f16", True)
    placement = place_directory(shape, plan, [10 * 2**30, 70 * 2**30])
    assert placement.gpu == 1 and placement.gpu_layers == placement.layers == 31
    assert placement.ram == embeddings
    assert placement.vram > placement.memory.gpu  # with the CUDA context
    with pytest.raises(NotSupported) as info:
        place_directory(shape, plan, [])
    assert "CUDA GPU" in str(info.value) and "GGUF" in str(info.value)
