"""A vision projector (mmproj GGUF) through llama.cpp's multimodal library, libmtmd.

`Projector` turns a prompt with image tags (`[img-N]`, as Ollama's prompts name images) and the
image files into token ids and `ImageSpan`s: each image decoded to RGB with Pillow, tokenized
by `mtmd_tokenize_from_parts` (which wraps it in the model's image tokens and, for projectors
that tile large images, makes a chunk per tile), then encoded by the projector into embeddings
the engine decodes into the image's cells (`decode_embeddings`). Encoded embeddings are kept by
the image's hash for a while, so a repeated image is encoded once.

libmtmd's context is not thread-safe: every call on it but `close` comes from the one thread the
runner gives it (its vision worker), never the engine thread, which only decodes embeddings.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from olla.engine.backend import KVCacheFull
from olla.engine.images import ImageSpan, placeholder_ids
from olla.errors import InvalidRequest, ModelLoadError

log = logging.getLogger(__name__)

IMAGE_TAG = re.compile(r"\[img-(\d+)\]")  # where image N goes (olla.images.IMAGE_TAG)
_CACHED_EMBEDDING_BYTES = 256 << 20  # encoded images kept for repeats (a few hundred images)
_PROBE_SIDE = 512  # an image this size gives the token count a tag is counted as


@dataclass(frozen=True)
class VisionPrompt:
    """A prompt tokenized with its images: ids (an image's cells hold placeholder ids) and the
    images' spans, in order."""

    ids: list[int]
    images: tuple[ImageSpan, ...]


class Projector:
    """libmtmd's context for one model and its projector."""

    def __init__(
        self, model: Any, path: Path, use_gpu: bool, threads: int, batch_tokens: int
    ) -> None:
        from llama_cpp import llama_cpp, mtmd_cpp  # the native libraries: runner only

        self._mtmd, self._lc = mtmd_cpp, llama_cpp
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = True  # its compute buffers are reserved now, not on the first image
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model, params)
        if not self._ctx:
            raise ModelLoadError(f"llama.cpp could not load the projector {path.name}")
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise ModelLoadError(f"the projector {path.name} reads no images")
        self.mrope = bool(mtmd_cpp.mtmd_decode_use_mrope(self._ctx))
        self.non_causal = bool(mtmd_cpp.mtmd_decode_use_non_causal(self._ctx, None))
        self.batch_tokens = batch_tokens
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.embedding_width = int(llama_cpp.llama_model_n_embd_inp(model))  # a row's floats
        self._cache: OrderedDict[bytes, npt.NDArray[np.float32]] = OrderedDict()
        self._cached_bytes = 0
        self._warned = False
        probe = Image(b"", _PROBE_SIDE, _PROBE_SIDE, bytes(3 * _PROBE_SIDE * _PROBE_SIDE), b"")
        chunks, infos = self._chunks("[img-0]", [probe], False)
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        self.tokens_per_image = sum(tokens for _, tokens in infos)

    def prepare(self, prompt: str, files: list[bytes], add_special: bool) -> VisionPrompt:
        """The prompt's tokens and images, each image encoded (or found encoded). InvalidRequest
        for an image Pillow cannot read, or tags that do not name the images sent."""
        images = [decode_image(data, i) for i, data in enumerate(files)]
        ids: list[int] = []
        spans: list[ImageSpan] = []
        chunks, infos = self._chunks(prompt, images, add_special)
        tiles: dict[bytes, int] = {}  # a large image's tiles are chunks with the image's id
        try:
            for index in range(self._mtmd.mtmd_input_chunks_size(chunks)):
                chunk = self._mtmd.mtmd_input_chunks_get(chunks, index)
                if self._mtmd.mtmd_input_chunk_get_type(chunk) == 0:  # text
                    ids += self._text_tokens(chunk)
                    continue
                image_id = infos[len(spans)][0]
                tile = tiles[image_id] = tiles.get(image_id, -1) + 1
                span = self._encode(chunk, len(ids), image_id + b"/%d" % tile)
                if span.non_causal and span.num_tokens > self.batch_tokens:
                    raise InvalidRequest(
                        f"an image of this model takes {span.num_tokens} tokens, more than "
                        f"one batch of {self.batch_tokens}; send a smaller image"
                    )
                spans.append(span)
                ids += placeholder_ids(span.key, span.num_tokens)
        finally:
            self._mtmd.mtmd_input_chunks_free(chunks)
        return VisionPrompt(ids, tuple(spans))

    def count(self, text: str) -> int:
        """Tokens of a prompt whose image tags each count as an image of the probe's size (the
        daemon fits chats into the context with it; exact for fixed-size projectors)."""
        tags = len(IMAGE_TAG.findall(text))
        plain = IMAGE_TAG.sub("", text).encode()
        capacity = len(plain) + 8
        tokens = (self._lc.llama_token * capacity)()
        n = self._lc.llama_tokenize(self._vocab, plain, len(plain), tokens, capacity, True, True)
        return abs(n) + tags * self.tokens_per_image

    def _chunks(
        self, prompt: str, images: list[Image], add_special: bool
    ) -> tuple[Any, list[tuple[bytes, int]]]:
        """libmtmd's chunks of the prompt with each tag's image in its place; (key, tokens) of
        each image chunk, in order."""
        mtmd = self._mtmd
        texts, named = split_tags(prompt, len(images))
        missing = sorted(set(range(len(images))) - set(named))
        if missing:
            raise InvalidRequest(
                f"the prompt has no [img-N] tag for images {missing} of the {len(images)} "
                "sent; name each image once with its tag"
            )
        keep: list[Any] = []  # ctypes objects alive until the call returns
        parts = []
        for i, text in enumerate(texts):
            if text:
                data = text.encode()
                inp = mtmd.mtmd_input_text(data, len(data), add_special, True)
                keep.append(inp)
                parts.append(mtmd.mtmd_input_part(ctypes.pointer(inp), None))
            if i < len(named):
                bitmap = images[named[i]].bitmap(mtmd)
                keep.append(bitmap)
                parts.append(mtmd.mtmd_input_part(None, bitmap.pointer))
        part_ptrs = (ctypes.POINTER(mtmd.mtmd_input_part) * len(parts))(
            *(ctypes.pointer(p) for p in parts)
        )
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            status = mtmd.mtmd_tokenize_from_parts(
                self._ctx, chunks, part_ptrs, len(parts), add_special
            )
        finally:
            for item in keep:
                if isinstance(item, _Bitmap):
                    item.free(mtmd)
        if status != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise InvalidRequest(f"the projector could not read the images (mtmd status {status})")
        infos = []
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) != 0:
                key = mtmd.mtmd_input_chunk_get_id(chunk) or b""
                infos.append((key, int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))))
        return chunks, infos

    def _text_tokens(self, chunk: Any) -> list[int]:
        count = ctypes.c_size_t(0)
        pointer = self._mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
        tokens = [int(pointer[i]) for i in range(count.value)]
        if any(t < 0 for t in tokens):
            # libmtmd wraps images in the tokens of the projector's recipe (idefics3's
            # <fake_token_around_image>, <row_1_col_1>, ...): a text model without them (a
            # projector paired with another model) gets -1 for each, which llama.cpp refuses
            if not self._warned:
                log.warning("the model's vocabulary lacks the projector's image tokens")
                self._warned = True
            tokens = [t for t in tokens if t >= 0]
        return tokens

    def _encode(self, chunk: Any, start: int, image_key: bytes) -> ImageSpan:
        """The chunk's embeddings (encoded now, or cached by `image_key`: the pixels' hash and
        the tile's number) and where its rows sit."""
        mtmd = self._mtmd
        num_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        num_positions = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
        digest = hashlib.blake2b(image_key + b"/%d" % num_tokens, digest_size=16).digest()
        embeddings = self._cache.get(digest)
        if embeddings is None:
            if mtmd.mtmd_encode_chunk(self._ctx, chunk) != 0:
                raise InvalidRequest("the projector could not encode an image")
            pointer = mtmd.mtmd_get_output_embd(self._ctx)
            width = self.embedding_width
            flat = np.ctypeslib.as_array(pointer, shape=(num_tokens * width,))
            embeddings = flat.reshape(num_tokens, width).copy()
            self._remember(digest, embeddings)
        else:
            self._cache.move_to_end(digest)
        base = scale = None
        if self.mrope:
            base, scale = self._decoder_positions(chunk, num_tokens)
        return ImageSpan(
            start, num_tokens, num_positions, digest, embeddings, base, scale, self.non_causal
        )

    def _decoder_positions(
        self, chunk: Any, num_tokens: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """Each row's 4 position components as base + image position * scale, found by asking
        libmtmd at image positions 0 and 1 (its layouts are linear in the image's position)."""
        mtmd = self._mtmd
        image = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
        at = []
        for pos_0 in (0, 1):
            out = (mtmd.mtmd_decoder_pos * num_tokens)()
            mtmd.mtmd_helper_image_get_decoder_pos(image, pos_0, out)
            at.append(np.array([[p.t, p.x, p.y, p.z] for p in out], dtype=np.int32).T)
        return at[0], at[1] - at[0]

    def _remember(self, key: bytes, embeddings: npt.NDArray[np.float32]) -> None:
        self._cache[key] = embeddings
        self._cached_bytes += embeddings.nbytes
        while self._cached_bytes > _CACHED_EMBEDDING_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes

    def close(self) -> None:
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None


def split_tags(prompt: str, num_images: int) -> tuple[list[str], list[int]]:
    """The prompt's text around its image tags, and the image each tag names: the first tag of
    each image sent; any other `[img-N]` (a user's own text) stays text, as Ollama leaves it."""
    texts, named, start = [], [], 0
    for match in IMAGE_TAG.finditer(prompt):
        number = int(match.group(1))
        if number >= num_images or number in named:
            continue
        texts.append(prompt[start : match.start()])
        named.append(number)
        start = match.end()
    texts.append(prompt[start:])
    return texts, named


@dataclass(frozen=True)
class Image:
    """An image decoded to RGB, with the hash of its pixels."""

    source: bytes
    width: int
    height: int
    rgb: bytes
    key: bytes

    def bitmap(self, mtmd: Any) -> _Bitmap:
        pixels = ctypes.cast(ctypes.c_char_p(self.rgb), ctypes.POINTER(ctypes.c_uint8))
        pointer = mtmd.mtmd_bitmap_init(self.width, self.height, pixels)  # copies them
        if not pointer:
            raise InvalidRequest("the projector could not take an image")
        if self.key:
            mtmd.mtmd_bitmap_set_id(pointer, self.key.hex().encode())
        return _Bitmap(pointer)


@dataclass
class _Bitmap:
    pointer: Any

    def free(self, mtmd: Any) -> None:
        if self.pointer:
            mtmd.mtmd_bitmap_free(self.pointer)
            self.pointer = None


def decode_image(data: bytes, index: int) -> Image:
    """An image file's first frame as RGB; InvalidRequest naming image `index` if unreadable."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            picture.seek(0)  # a GIF's or WebP's first frame
            rgb = picture.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise InvalidRequest(f"image {index} cannot be read: {exc}") from None
    pixels = rgb.tobytes()
    size = rgb.width.to_bytes(4, "little") + rgb.height.to_bytes(4, "little")
    key = hashlib.blake2b(size + pixels, digest_size=16).digest()
    return Image(data, rgb.width, rgb.height, pixels, key)


def decode_embeddings(
    lc: Any,
    ctx: Any,
    slot: int,
    rows: npt.NDArray[np.float32],
    positions: npt.NDArray[np.int32],
    want_logits: bool,
    batch_tokens: int,
    non_causal: bool,
) -> bool:
    """Decode embedding `rows` into `slot` at `positions` (one per row, or section-major
    several per row), in calls of at most `batch_tokens` rows (one call when non-causal: its
    rows must see each other). True when the last row's logits are out. On failure the rows
    decoded so far leave the cache and KVCacheFull or RuntimeError is raised."""
    n, width = rows.shape
    per_row = len(positions) // n
    sections = positions.reshape(per_row, n)
    step = n if non_causal else batch_tokens
    if non_causal:
        lc.llama_set_causal_attn(ctx, False)
    try:
        for offset in range(0, n, step):
            count = min(step, n - offset)
            last = want_logits and offset + count == n
            status = _decode_rows(
                lc,
                ctx,
                slot,
                rows[offset : offset + count],
                sections[:, offset : offset + count],
                last,
            )
            if status != 0:
                lc.llama_memory_seq_rm(lc.llama_get_memory(ctx), slot, int(positions[0]), -1)
                if status == 1:
                    raise KVCacheFull("no room in the KV cache for an image")
                raise RuntimeError(f"llama_decode of an image failed with status {status}")
    finally:
        if non_causal:
            lc.llama_set_causal_attn(ctx, True)
    return want_logits


def _decode_rows(
    lc: Any,
    ctx: Any,
    slot: int,
    rows: npt.NDArray[np.float32],
    sections: npt.NDArray[np.int32],
    want_last: bool,
) -> int:
    n = len(rows)
    embd = np.ascontiguousarray(rows, dtype=np.float32)
    pos = np.ascontiguousarray(sections, dtype=np.int32).reshape(-1)
    seq = np.full(n, slot, dtype=np.int32)
    num_seq = np.ones(n, dtype=np.int32)
    logits = np.zeros(n, dtype=np.int8)
    logits[-1] = want_last
    seq_type = ctypes.POINTER(ctypes.c_int32)
    seq_ptrs = (seq_type * n)(*(ctypes.cast(seq.ctypes.data + 4 * i, seq_type) for i in range(n)))
    batch = lc.llama_batch()
    batch.n_tokens = n
    batch.token = None
    batch.embd = embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    batch.pos = pos.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
    batch.n_seq_id = num_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
    batch.seq_id = seq_ptrs
    batch.logits = logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
    return int(lc.llama_decode(ctx, batch))
