"""scripts/synthetic_mmproj's projector in llama.cpp's libmtmd, beside the real SmolLM2 GGUF.

The projector has random weights: these tests check the mechanics olla's vision path relies on
(the file loads, an image tokenizes to a known count, encoding gives finite embeddings of the text
model's width, a fixed function of the pixels), called through llama-cpp-python's ctypes bindings.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader

from tests.conftest import REPO, synthetic_mmproj

lc = pytest.importorskip("llama_cpp.llama_cpp")
mtmd = pytest.importorskip("llama_cpp.mtmd_cpp")

TEXT_CHUNK = 0  # MTMD_INPUT_CHUNK_TYPE_TEXT
IMAGE_CHUNK = 1  # MTMD_INPUT_CHUNK_TYPE_IMAGE
TOKENS_PER_TILE = 64  # (512 / 16)^2 patches, pixel-shuffled by 4 x 4
LLAMA_TOKEN_NULL = -1


@dataclass(frozen=True)
class Chunk:
    """One chunk of a tokenized prompt: text tokens, or an image's token and position counts."""

    kind: int
    n_tokens: int
    n_pos: int
    tokens: tuple[int, ...] = ()
    non_causal: bool = False


class Vision:
    """A text model and a projector loaded in libmtmd, for tokenizing and encoding images."""

    def __init__(self, model_path: Path, mmproj_path: Path) -> None:
        lc.llama_backend_init()
        self.model = lc.llama_model_load_from_file(
            str(model_path).encode(), lc.llama_model_default_params()
        )
        assert self.model is not None, f"{model_path} did not load"
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = 2
        params.warmup = False
        self.ctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), self.model, params)
        self.n_embd = lc.llama_model_n_embd(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))

    def close(self) -> None:
        if self.ctx is not None:
            mtmd.mtmd_free(self.ctx)
        lc.llama_model_free(self.model)

    def tokenize(self, image: np.ndarray, prompt: str = "Look: {image} What is it?") -> list[Chunk]:
        """The chunks of a prompt with `image` (height x width x 3 uint8) at its marker."""
        return [self._describe(chunk) for chunk in self._chunks(image, prompt)]

    def encode(self, image: np.ndarray) -> list[np.ndarray]:
        """Each image chunk's embeddings (n_tokens x n_embd) for a prompt with `image`."""
        outputs = []
        for chunk in self._chunks(image, "{image}"):
            if mtmd.mtmd_input_chunk_get_type(chunk) != IMAGE_CHUNK:
                continue
            assert mtmd.mtmd_encode_chunk(self.ctx, chunk) == 0
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            embd = mtmd.mtmd_get_output_embd(self.ctx)
            outputs.append(np.ctypeslib.as_array(embd, shape=(n_tokens, self.n_embd)).copy())
        return outputs

    def next_logits(self, image: np.ndarray) -> np.ndarray:
        """The text model's logits after a chat prompt with `image`, decoded chunk by chunk
        (LLAMA_TOKEN_NULL dropped)."""
        params = lc.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 512, 512, 2, 2
        lctx = lc.llama_init_from_model(self.model, params)
        try:
            prompt = "<|im_start|>user\n{image}What is it?<|im_end|>\n<|im_start|>assistant\n"
            n_past = 0
            for chunk in self._chunks(image, prompt):
                n_past = self._decode(lctx, chunk, n_past)
            logits = lc.llama_get_logits_ith(lctx, -1)
            return np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).copy()
        finally:
            lc.llama_free(lctx)

    def _decode(self, lctx: ctypes.c_void_p, chunk: ctypes.c_void_p, n_past: int) -> int:
        """Decode one chunk at position n_past; return the next position."""
        described = self._describe(chunk)
        if described.kind == TEXT_CHUNK:
            tokens = [t for t in described.tokens if t != LLAMA_TOKEN_NULL]
            self._decode_tokens(lctx, tokens)
            return n_past + len(tokens)
        assert mtmd.mtmd_encode_chunk(self.ctx, chunk) == 0
        embd = mtmd.mtmd_get_output_embd(self.ctx)
        new_n_past = lc.llama_pos(0)
        no_callback = mtmd.mtmd_helper_post_decode_callback()
        assert (
            mtmd.mtmd_helper_decode_image_chunk(
                self.ctx,
                lctx,
                chunk,
                embd,
                n_past,
                0,
                512,
                ctypes.byref(new_n_past),
                no_callback,
                None,
            )
            == 0
        )
        return int(new_n_past.value)

    @staticmethod
    def _decode_tokens(lctx: ctypes.c_void_p, tokens: list[int]) -> None:
        array = (lc.llama_token * len(tokens))(*tokens)
        assert lc.llama_decode(lctx, lc.llama_batch_get_one(array, len(tokens))) == 0

    def _chunks(self, image: np.ndarray, prompt: str) -> Iterator[ctypes.c_void_p]:
        height, width, _ = image.shape
        pixels = (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes())
        bitmap = mtmd.mtmd_bitmap_init(width, height, pixels)
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = prompt.format(image=mtmd.mtmd_default_marker().decode()).encode()
            given = mtmd.mtmd_input_text(text, len(text), True, True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            assert mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(given), bitmaps, 1) == 0
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                yield mtmd.mtmd_input_chunks_get(chunks, i)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)

    def _describe(self, chunk: ctypes.c_void_p) -> Chunk:
        kind = mtmd.mtmd_input_chunk_get_type(chunk)
        n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        n_pos = mtmd.mtmd_input_chunk_get_n_pos(chunk)
        if kind == TEXT_CHUNK:
            count = ctypes.c_size_t()
            tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            return Chunk(kind, n_tokens, n_pos, tuple(tokens[i] for i in range(count.value)))
        return Chunk(kind, n_tokens, n_pos, (), mtmd.mtmd_decode_use_non_causal(self.ctx, chunk))


def noise(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_tokens(chunks: list[Chunk]) -> list[int]:
    return [c.n_tokens for c in chunks if c.kind == IMAGE_CHUNK]


@pytest.fixture(scope="module")
def vision(smollm2_gguf: Path, smolvlm_mmproj: Path) -> Iterator[Vision]:
    loaded = Vision(smollm2_gguf, smolvlm_mmproj)
    yield loaded
    loaded.close()


def test_the_projector_loads_beside_smollm2_as_a_vision_model(vision: Vision) -> None:
    assert vision.ctx is not None
    assert mtmd.mtmd_support_vision(vision.ctx)
    assert not mtmd.mtmd_support_audio(vision.ctx)
    # idefics3 positions advance one per token (no M-RoPE), decoded causally
    assert not mtmd.mtmd_decode_use_mrope(vision.ctx)


def test_an_image_is_a_tile_and_its_overview_of_64_tokens_each(vision: Vision) -> None:
    for width, height in [(512, 512), (1024, 768), (40, 30)]:
        chunks = vision.tokenize(noise(width, height, seed=0))
        assert image_tokens(chunks) == [TOKENS_PER_TILE, TOKENS_PER_TILE], (width, height)
        images = [c for c in chunks if c.kind == IMAGE_CHUNK]
        assert all(c.n_pos == c.n_tokens and not c.non_causal for c in images)


def test_text_chunks_hold_null_tokens_where_smollm2_lacks_idefics3s_markers(
    vision: Vision,
) -> None:
    """libmtmd wraps the overview in <fake_token_around_image><global-img> ... tokens that only
    SmolVLM's own vocabulary has; with SmolLM2's it writes LLAMA_TOKEN_NULL in their place, and
    llama.cpp's mtmd_helper_eval_chunks aborts on them. A decoder must drop them."""
    chunks = vision.tokenize(noise(512, 512, seed=0))
    texts = [c.tokens for c in chunks if c.kind == TEXT_CHUNK]
    assert [c.kind for c in chunks] == [TEXT_CHUNK, IMAGE_CHUNK] * 2 + [TEXT_CHUNK]
    assert sum(t.count(LLAMA_TOKEN_NULL) for t in texts) == 3
    assert LLAMA_TOKEN_NULL not in texts[0]  # the prompt's own text is whole


def test_encoding_gives_finite_embeddings_of_the_text_models_width(vision: Vision) -> None:
    tile, overview = vision.encode(noise(512, 512, seed=1))
    for embd in (tile, overview):
        assert embd.shape == (TOKENS_PER_TILE, 576)
        assert np.isfinite(embd).all()
        assert embd.std() > 0


def test_the_same_image_encodes_the_same_and_another_image_differently(vision: Vision) -> None:
    first = vision.encode(noise(512, 512, seed=1))
    again = vision.encode(noise(512, 512, seed=1))
    other = vision.encode(noise(512, 512, seed=2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(not np.allclose(a, b) for a, b in zip(first, other, strict=True))


def test_the_embeddings_move_smollm2s_next_token_and_the_same_image_gives_the_same(
    vision: Vision,
) -> None:
    """What issue 28's engine tests need from random weights: an image changes what the model
    says next, and only through its pixels."""
    first = vision.next_logits(noise(512, 512, seed=1))
    again = vision.next_logits(noise(512, 512, seed=1))
    other = vision.next_logits(noise(512, 512, seed=2))
    assert np.isfinite(first).all()
    assert np.array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)


def test_smolvlms_own_longest_edge_cuts_an_image_into_up_to_16_tiles(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    """The default --longest-edge 2048: the long side is scaled to 2048 (small images too), the
    image cut into 512x512 tiles, and an overview added. Tokenizing reads no weights."""
    mmproj = synthetic_mmproj(tmp_path / "mmproj.gguf", smollm2_gguf, layers=1, longest_edge=2048)
    real = Vision(smollm2_gguf, mmproj)
    try:
        assert image_tokens(real.tokenize(noise(512, 512, seed=0))) == [TOKENS_PER_TILE] * 17
        assert image_tokens(real.tokenize(noise(1024, 768, seed=0))) == [TOKENS_PER_TILE] * 13
        assert image_tokens(real.tokenize(noise(300, 200, seed=0))) == [TOKENS_PER_TILE] * 13
    finally:
        real.close()


def test_the_script_writes_smolvlms_keys_and_types(smollm2_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "mmproj.gguf"
    command = [sys.executable, "scripts/synthetic_mmproj", "--model", str(smollm2_gguf)]
    subprocess.run([*command, "--layers", "1", "--out", str(out)], cwd=REPO, check=True)
    reader = GGUFReader(out)
    keys = {name: field.contents() for name, field in reader.fields.items()}
    assert keys["general.architecture"] == "clip"
    assert keys["clip.projector_type"] == "idefics3"
    assert keys["clip.has_vision_encoder"] is True
    assert keys["clip.vision.projection_dim"] == 576
    assert keys["clip.vision.block_count"] == 1
    assert keys["clip.vision.projector.scale_factor"] == 4
    assert keys["clip.vision.preproc_image_size"] == 2048
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["v.blk.0.attn_q.weight"] == GGMLQuantizationType.F16
    assert types["mm.model.fc.weight"] == GGMLQuantizationType.F16
    assert types["v.blk.0.ln1.weight"] == GGMLQuantizationType.F32
    assert types["v.position_embd.weight"] == GGMLQuantizationType.F32
    fc = next(t for t in reader.tensors if t.name == "mm.model.fc.weight")
    assert list(fc.shape) == [768 * 16, 576]  # GGML order: 16 pixel-shuffled patches in, 576 out


def test_the_script_refuses_a_zero_depth_and_a_model_that_is_not_a_gguf(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf")
    script = [sys.executable, "scripts/synthetic_mmproj", "--out", str(tmp_path / "x.gguf")]
    for args, message in [
        (["--layers", "0"], "--layers must be at least 1"),
        (["--model", str(not_gguf)], "--model:"),
    ]:
        done = subprocess.run([*script, *args], cwd=REPO, capture_output=True, text=True)
        assert done.returncode != 0
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.gguf").exists()
