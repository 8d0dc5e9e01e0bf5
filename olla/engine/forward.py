"""A batch's rows as llama.cpp takes them: token rows as parallel arrays, and where an image's
rows go (olla.engine.images)."""

from __future__ import annotations

import itertools

import numpy as np

from olla.engine.backend import ForwardBatch
from olla.engine.images import position_gap
from olla.engine.scheduler import ScheduledItem


def forward_batch(items: list[ScheduledItem], device_sampling: bool) -> ForwardBatch:
    """Token rows as parallel arrays, positions built without a per-token Python loop."""
    n = len(items)
    counts = np.fromiter((item.count for item in items), np.int64, n)
    starts = np.fromiter((item.start for item in items), np.int64, n)
    if any(item.seq.images for item in items):  # under M-RoPE a position is not an index
        starts -= np.fromiter(
            (position_gap(item.seq.images, item.start) for item in items), np.int64, n
        )
    slots = np.fromiter((item.seq.slot for item in items), np.int32, n)
    ends = np.cumsum(counts)
    total = int(ends[-1])
    tokens = np.fromiter(
        itertools.chain.from_iterable(item.token_ids for item in items), np.int32, total
    )
    # row r of item i sits at starts[i] + (r - first row of item i)
    positions = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - counts), counts)
    want = np.zeros(total, dtype=bool)
    want[ends - 1] = np.fromiter((item.want_logits for item in items), bool, n)
    device = None
    if device_sampling:  # a row whose token is the plain argmax may go there
        device = np.zeros(total, dtype=bool)
        device[ends - 1] = np.fromiter((item.seq.device_greedy for item in items), bool, n)
        device &= want
    return ForwardBatch(tokens, positions.astype(np.int32), np.repeat(slots, counts), want, device)


def image_position(item: ScheduledItem) -> tuple[int, int]:
    """(the position of the item's image, the least position its rows take)."""
    image, seq = item.image, item.seq
    assert image is not None
    position = image.start - position_gap(seq.images, image.start)
    if image.position_base is not None:  # M-RoPE: every row of the image is at `position`
        return position, position
    return position, position + item.start - image.start
