"""GGUF metadata: synthetic files from gguf.GGUFWriter, the shipped SmolLM2 file, broken files."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from olla.errors import InvalidModelFile
from olla.registry.gguf_info import _Reader, check_gguf_header, parameter_size, read_gguf_info

TOKENS = [f"tok{i}" for i in range(40)]  # over 32: hidden from non-verbose model_info
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"


def write_gguf(
    path: Path,
    arch: str = "llama",
    tensors: bool = True,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    tokens: list[str] = TOKENS,
) -> Path:
    """A tiny but complete GGUF: llama hyper-parameters, a vocabulary, two F32 tensors."""
    w = gguf.GGUFWriter(path, arch, endianess=endianess)
    w.add_name("Tiny Llama")
    w.add_context_length(2048)
    w.add_embedding_length(8)
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_chat_template(TEMPLATE)
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_scores([-float(i) / 3 for i in range(len(tokens))])
    w.add_array("test.short_list", [1, 2, 3])
    w.add_bool("test.flag", True)
    if extra:
        extra(w)
    if tensors:
        w.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
        w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf")


def open_handles(path: Path) -> int:
    """How many of this process's descriptors (mmap's dup included) point at `path`."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd to count open handles")
    target = str(path.resolve())
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == target)


def stock_values(path: Path) -> dict[str, object]:
    """The unmodified GGUFReader's view of every KV, to check the sped-up reader against."""
    reader = gguf.GGUFReader(path)
    return {name: f.contents() for name, f in reader.fields.items()}


def same_values(ours: object, stock: object) -> bool:
    # We give float32 values their shortest repr (1e-05); compare them at float32 precision.
    if isinstance(stock, list) and isinstance(ours, list):
        return len(ours) == len(stock) and all(map(same_values, ours, stock))
    if isinstance(stock, float):
        return np.float32(ours) == np.float32(stock)
    return type(ours) is type(stock) and ours == stock


def test_synthetic_fields(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    assert info.path == str(tiny)
    assert info.version == 3
    assert info.architecture == info.family == "llama"
    assert info.name == "Tiny Llama"
    assert info.parameter_count == 4 * 8 + 8  # no general.parameter_count: summed from tensors
    assert info.parameter_size == "40"
    assert (info.context_length, info.embedding_length, info.block_count) == (2048, 8, 2)
    assert (info.head_count, info.head_count_kv) == (4, 2)
    assert info.file_type == "F16"
    assert info.chat_template == TEMPLATE
    assert info.tensor_count == 2
    meta = info.metadata
    assert meta["tokenizer.ggml.tokens"] == TOKENS
    assert meta["tokenizer.ggml.token_type"] == [1] * 40
    assert meta["test.short_list"] == [1, 2, 3]
    assert meta["test.flag"] is True
    assert meta["llama.attention.layer_norm_rms_epsilon"] == 1e-5  # float32 shortest repr
    assert meta["GGUF.tensor_count"] == 2
    assert "tok0" not in repr(info)  # the vocabulary stays out of repr
    with pytest.raises(TypeError):
        meta["x"] = 1  # type: ignore[index]


def test_metadata_matches_stock_reader(tiny: Path) -> None:
    ours, stock = dict(read_gguf_info(tiny).metadata), stock_values(tiny)
    assert ours.keys() == stock.keys()
    assert all(same_values(ours[k], stock[k]) for k in stock), ours


def test_model_info(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    short = info.model_info()
    assert not any(key.startswith("GGUF.") for key in short)
    assert list(short) == sorted(short)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        assert key in short and short[key] is None
    assert short["test.short_list"] == [1, 2, 3]
    assert short["general.architecture"] == "llama"
    assert short["general.parameter_count"] == 40
    assert short["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert short["tokenizer.chat_template"] == TEMPLATE
    verbose = info.model_info(verbose=True)
    assert verbose["tokenizer.ggml.tokens"] == TOKENS
    verbose["tokenizer.ggml.tokens"].append("mutated")  # type: ignore[union-attr]
    assert info.metadata["tokenizer.ggml.tokens"] == TOKENS


@pytest.mark.parametrize(
    ("file_type", "name"),
    [
        (gguf.LlamaFileType.ALL_F32, "F32"),
        (gguf.LlamaFileType.MOSTLY_F16, "F16"),
        (gguf.LlamaFileType.MOSTLY_BF16, "BF16"),
        (gguf.LlamaFileType.MOSTLY_Q4_1, "Q4_1"),
        (gguf.LlamaFileType.MOSTLY_Q4_K_M, "Q4_K_M"),
        (gguf.LlamaFileType.GUESSED, "unknown"),
        (999, "unknown"),
    ],
)
def test_file_type_names(tmp_path: Path, file_type: int, name: str) -> None:
    def set_type(w: gguf.GGUFWriter) -> None:
        w.kv_data[0]["general.file_type"].value = int(file_type)

    info = read_gguf_info(write_gguf(tmp_path / "t.gguf", extra=set_type))
    assert info.file_type == name
    assert info.model_info()["general.file_type"] == int(file_type)


def write_bare(path: Path, arch: str, tensors: dict[str, np.ndarray], **uint16: int) -> Path:
    """A GGUF with only an architecture, some uint16 keys and the given tensors."""
    w = gguf.GGUFWriter(path, arch)
    for key, value in uint16.items():
        w.add_uint16(key.replace("_", "."), value)
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_absent_optional_keys(tmp_path: Path) -> None:
    path = write_bare(tmp_path / "bare.gguf", "qwen2", {"w": np.zeros((3, 5), dtype=np.float32)})
    info = read_gguf_info(path)
    assert (info.architecture, info.name, info.chat_template) == ("qwen2", None, None)
    assert (info.context_length, info.head_count, info.head_count_kv) == (None, None, None)
    assert (info.parameter_count, info.file_type, info.tensor_count) == (15, "unknown", 1)
    model_info = info.model_info()
    assert model_info["general.parameter_count"] == 15
    assert model_info["general.file_type"] == int(gguf.LlamaFileType.GUESSED)


def test_stored_parameter_count_and_per_layer_heads(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_uint64("general.parameter_count", 8_030_261_248)
        w.kv_data[0]["llama.attention.head_count_kv"] = gguf.GGUFValue(
            [2, 4, 3], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32
        )

    info = read_gguf_info(write_gguf(tmp_path / "t.gguf", extra=extra))
    assert (info.parameter_count, info.parameter_size) == (8_030_261_248, "8.03B")
    assert info.head_count_kv == 4  # the largest per-layer value, as Ollama reports it
    assert info.model_info()["general.parameter_count"] == 8_030_261_248


def test_version_2_is_read(tiny: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[4:8] = (2).to_bytes(4, "little")  # v2 and v3 share the layout olla reads
    tiny.write_bytes(bytes(data))
    assert check_gguf_header(tiny) == 2
    assert read_gguf_info(tiny).version == 2


def test_no_architecture(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="has no general.architecture"):
        read_gguf_info(write_gguf(tmp_path / "t.gguf", arch=""))


def test_mapping_released(tiny: Path) -> None:
    read_gguf_info(tiny)
    assert open_handles(tiny) == 0
    tiny.write_bytes(tiny.read_bytes()[:-20])  # fails while building tensors: map is live then
    with pytest.raises(InvalidModelFile) as caught:
        read_gguf_info(tiny)
    assert open_handles(tiny) == 0, "the error's traceback keeps the memory map alive"
    assert caught.value.__cause__ is None


def test_reader_hooks_are_wired(tiny: Path) -> None:
    # A canary for gguf upgrades: the speed-up and the bounds check hook reader internals.
    reader = _Reader(tiny)
    assert len(reader.fields["tokenizer.ggml.token_type"].parts) == 3 + 3  # key parts + 3
    with pytest.raises(EOFError):
        reader._get(len(reader.data) - 2, np.uint32)


def test_real_smollm2(smollm2_gguf: Path) -> None:
    path = smollm2_gguf
    info = read_gguf_info(path)
    assert (info.architecture, info.file_type, info.version) == ("llama", "Q4_1", 3)
    assert (info.parameter_count, info.parameter_size) == (134_515_008, "134.52M")
    assert (info.context_length, info.embedding_length, info.block_count) == (8192, 576, 30)
    assert (info.head_count, info.head_count_kv, info.tensor_count) == (9, 3, 272)
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert len(info.metadata["tokenizer.ggml.tokens"]) == 49152  # type: ignore[arg-type]
    assert info.model_info()["tokenizer.ggml.merges"] is None
    assert len(info.model_info(verbose=True)["tokenizer.ggml.merges"]) == 48900  # type: ignore[arg-type]
    assert open_handles(path) == 0


def test_real_smollm2_matches_stock_reader(smollm2_gguf: Path) -> None:
    path = smollm2_gguf
    ours, stock = dict(read_gguf_info(path).metadata), stock_values(path)
    assert ours.keys() == stock.keys()
    assert all(same_values(ours[k], stock[k]) for k in stock)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "is empty"),
        (b"FROM llama3\nPARAMETER temperature 0.7\n", "is not a GGUF model file (it does not"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "is not a GGUF model file (it does not start with"),
        (b"GG", 'is not a GGUF model file (it does not start with "GGUF")'),
        (b"GGUF", "is a damaged GGUF file: it ends inside its header"),
        (b"GGUF" + (1).to_bytes(4, "little") + bytes(16), "unsupported GGUF version 1 (olla"),
        (b"GGUF" + (99).to_bytes(4, "little") + bytes(16), "unsupported GGUF version 99 (olla"),
    ],
)
def test_not_gguf(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    for read in (check_gguf_header, read_gguf_info):
        with pytest.raises(InvalidModelFile, match="^" + re.escape(f'"{path}"')) as caught:
            read(path)
        assert fragment in str(caught.value)
        assert caught.value.status == 400


def test_not_gguf_never_shows_the_bytes_read(tmp_path: Path) -> None:
    """The message goes to a client; the bytes may be a secret's (`FROM /etc/shadow` showed
    `bad magic b'root'`)."""
    path = tmp_path / "shadow"
    path.write_bytes(b"root:$6$salt$hash:19000:0:99999:7:::\n")
    for read in (check_gguf_header, read_gguf_info):
        with pytest.raises(InvalidModelFile) as caught:
            read(path)
        message = str(caught.value).replace(str(path), "<path>")
        assert message == '"<path>" is not a GGUF model file (it does not start with "GGUF")'


def test_big_endian(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    with pytest.raises(InvalidModelFile, match="big-endian"):
        read_gguf_info(path)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match='model file ".*nope.gguf" does not exist'):
        read_gguf_info(tmp_path / "nope.gguf")
    with pytest.raises(InvalidModelFile, match="cannot be read"):
        read_gguf_info(tmp_path)


def end_of_tensor_data(path: Path) -> int:
    reader = gguf.GGUFReader(path)
    return max(t.data_offset + t.n_bytes for t in reader.tensors)


@pytest.mark.parametrize("cut", [10, 30, 100, "half", "tensor_info", "tensor_data"])
def test_truncated(tiny: Path, cut: int | str) -> None:
    data = tiny.read_bytes()
    reader = gguf.GGUFReader(tiny)
    first_tensor_info = reader.tensors[0].field.offset
    size = {
        "half": first_tensor_info // 2,  # in the middle of the KVs
        "tensor_info": first_tensor_info + 10,
        "tensor_data": end_of_tensor_data(tiny) - 1,
    }.get(str(cut), cut)
    del reader
    tiny.write_bytes(data[: int(size)])
    with pytest.raises(InvalidModelFile, match=r'".*tiny.gguf" is a damaged GGUF file: truncated'):
        read_gguf_info(tiny)


def test_every_cut_is_caught(tmp_path: Path) -> None:
    """Cut anywhere before the end of the last tensor: always a clear error, never a traceback."""
    path = write_gguf(tmp_path / "whole.gguf", tokens=TOKENS[:3])
    end = end_of_tensor_data(path)
    os.truncate(path, end)  # trailing padding is not needed
    assert read_gguf_info(path).tensor_count == 2
    for size in range(end - 1, 0, -1):  # shrinking in place: far cheaper than rewriting
        os.truncate(path, size)
        with pytest.raises(InvalidModelFile):
            read_gguf_info(path)


def test_cut_inside_last_string_without_tensors(tmp_path: Path) -> None:
    # No tensor follows, so the stock reader would silently hand back a shortened string.
    path = write_gguf(
        tmp_path / "t.gguf", tensors=False, extra=lambda w: w.add_string("z", "x" * 50)
    )
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"x" * 50) + 25])
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_gguf_info(path)


def u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


ONE_KV = u64(0) + u64(1)  # tensor count 0, KV count 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (ONE_KV + u64(2**62), "truncated"),  # a key claiming 2**62 bytes
        (ONE_KV + u64(1) + b"k" + u32(99), "99"),  # value type 99 does not exist
        # a uint8 array claiming 2**62 elements: must fail at once, not loop
        (ONE_KV + u64(1) + b"k" + u32(9) + u32(0) + u64(2**62), "truncated"),
        (ONE_KV + u64(1) + b"k" + u32(8) + u64(2**62), "truncated"),  # a 2**62-byte string
    ],
)
def test_garbage_after_header(tmp_path: Path, body: bytes, fragment: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + u32(3) + body + bytes(32))
    with pytest.raises(InvalidModelFile, match="is a damaged GGUF file") as caught:
        read_gguf_info(path)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (1500, "1.5K"),
        (999_999, "1M"),
        (134_515_008, "134.52M"),
        (360_000_000, "360M"),
        (999_999_999, "1B"),
        (1_235_814_400, "1.24B"),
        (1_200_000_000, "1.2B"),
        (8_030_261_248, "8.03B"),
        (70_553_706_496, "70.55B"),
        (1_000_000_000_000, "1T"),
        (2_500_000_000_000_000, "2500T"),
    ],
)
def test_parameter_size(count: int, text: str) -> None:
    assert parameter_size(count) == text


def test_the_first_part_of_a_split_gguf_counts_every_part(tmp_path: Path) -> None:
    def split(w: gguf.GGUFWriter) -> None:
        w.add_uint16("split.no", 0)
        w.add_uint16("split.count", 2)

    first = write_gguf(tmp_path / "m-00001-of-00002.gguf", extra=split)
    query = {"blk.0.attn_q.weight": np.ones((8, 8), dtype=np.float32)}
    write_bare(tmp_path / "m-00002-of-00002.gguf", "llama", query, split_no=1, split_count=2)
    info = read_gguf_info(first)
    assert info.tensor_bytes["blk.0.attn_q.weight"] == 8 * 8 * 4
    assert info.tensor_count == 3 and info.parameter_count == 4 * 8 + 8 + 64
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(InvalidModelFile, match="m-00002-of-00002.gguf"):
        read_gguf_info(first)
