"""The images of the vision bench: PNGs made with Pillow, sent as data URIs in chat messages."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

QUESTION = "What is in this picture? Answer in one sentence."


def make_png(seed: int, size: int = 512) -> bytes:
    """A `size` x `size` PNG of a seeded 16 x 16 grid of colours: a new image for each seed.

    Blocks rather than noise keep it a few KiB; the servers' cost depends on the pixel size only
    (the image is scaled and cut into tiles before the encoder sees it).
    """
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    picture = Image.fromarray(grid, "RGB").resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def image_message(png: bytes, question: str = QUESTION) -> dict[str, Any]:
    """A user message with `question` and the PNG as an `image_url` part with a data URI."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": uri}},
        ],
    }
