"""Images in a prompt, as the engine sees them: runs of cells fed with embeddings, not tokens.

A vision model's prompt is text tokens with images between them. An image takes `num_tokens`
cells of the KV cache, fed with the projector's embeddings (one row per cell), and advances the
positions by `num_positions`: the same number but for M-RoPE models (Qwen2-VL and kin), whose
image rows share positions laid out in two dimensions. In the prompt's token ids an image's
cells hold placeholder ids made from the image's hash (negative, so no vocabulary id is one),
so the block manager's prefix cache keys an image by its pixels: the same image again is a hit,
a different one never is.

llama.cpp does not take token ids and embeddings in one batch, so the engine decodes an image's
rows in calls of their own within a step, beside the batched token rows of the other sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class ImageSpan:
    """One image of a prompt: where its cells start, how many, and what fills them."""

    start: int  # the index of its first cell among the prompt's tokens
    num_tokens: int  # cells (and embedding rows)
    num_positions: int  # positions it advances: num_tokens, but under M-RoPE
    key: bytes  # a hash of its pixels, which its placeholder ids carry
    embeddings: npt.NDArray[np.float32]  # (num_tokens, embedding width)
    # under M-RoPE, each row's 4 position components as `base + image_position * scale`
    # (llama.cpp's section-major layout, shape (4, num_tokens)); None: plain positions
    position_base: npt.NDArray[np.int32] | None = None
    position_scale: npt.NDArray[np.int32] | None = None
    non_causal: bool = False  # its rows attend to each other both ways (Gemma 3)

    @property
    def end(self) -> int:
        return self.start + self.num_tokens

    def moved(self, start: int) -> ImageSpan:
        """The same image at another place in the prompt."""
        return ImageSpan(
            start,
            self.num_tokens,
            self.num_positions,
            self.key,
            self.embeddings,
            self.position_base,
            self.position_scale,
            self.non_causal,
        )

    def positions(self, image_position: int, first: int) -> npt.NDArray[np.int32]:
        """The positions of rows [first, num_tokens) when the image starts at `image_position`:
        one per row, or under M-RoPE 4 per row, section-major."""
        if self.position_base is None or self.position_scale is None:
            return np.arange(
                image_position + first, image_position + self.num_tokens, dtype=np.int32
            )
        rows = self.position_base[:, first:] + image_position * self.position_scale[:, first:]
        return np.ascontiguousarray(rows, dtype=np.int32).reshape(-1)


def placeholder_ids(key: bytes, count: int) -> list[int]:
    """The ids an image's cells hold in a prompt: negative, from its hash, one per cell (the
    index mixed in, so each block of a large image hashes differently even alone)."""
    base = int.from_bytes(key[:4], "little") & 0x3FFFFFFF
    return [-1 - ((base + i) & 0x3FFFFFFF) for i in range(count)]


def position_gap(spans: tuple[ImageSpan, ...], index: int) -> int:
    """How far the position of the cell at `index` is below `index`: the cells the images before
    it took beyond the positions they advanced (0 but under M-RoPE)."""
    return sum(s.num_tokens - s.num_positions for s in spans if s.end <= index)


def span_at(spans: tuple[ImageSpan, ...], index: int) -> ImageSpan | None:
    """The image whose cells include `index`, if any."""
    for span in spans:
        if span.start <= index < span.end:
            return span
    return None


def next_span(spans: tuple[ImageSpan, ...], index: int) -> ImageSpan | None:
    """The first image starting at or after `index`."""
    return next((s for s in spans if s.start >= index), None)
