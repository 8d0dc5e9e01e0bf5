"""Array kernels of the sampler: exact top-k, packed-key sorts, filters and inverse-CDF draws.

Every function works on a batch of rows at once (rows, candidates) and never loops over the
vocabulary in Python. Candidates are kept sorted descending, ties broken by token id.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from olla.engine.sampling_params import SamplingParams

FloatArray = npt.NDArray[np.float32]
DoubleArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]

_LOW32 = np.uint64(0xFFFFFFFF)


def filter_and_draw(
    ids: IndexArray,
    vals: FloatArray,
    params: list[SamplingParams],
    uniforms: DoubleArray,
    norm: DoubleArray | None = None,
    skip_typical: bool = False,
) -> IndexArray:
    """top_k, typical_p, top_p, min_p, temperature and the draw, over candidates sorted
    descending (`vals` is modified). `norm`: the log of each row's total mass when the
    candidates are only the top of the vocab (top_k off), for top_p's probabilities.
    After each filter, columns past every row's last survivor are dropped."""
    rows, k = vals.shape
    top_k = np.array([p.top_k if 0 < p.top_k < k else k for p in params])
    if (top_k < k).any():
        vals[np.arange(k) >= top_k[:, None]] = -np.inf
        ids, vals = _trim(ids, vals)
    typical = np.array([p.typical_p for p in params])
    sub = np.flatnonzero(typical < 1)
    if sub.size and not skip_typical:
        vals[sub] = _typical(vals[sub], typical[sub])
        ids, vals = _trim(ids, vals)
    top_p = np.array([p.top_p for p in params])
    sub = np.flatnonzero(top_p < 1)
    if sub.size:
        v = vals[sub].astype(np.float64)
        logz = norm[sub] if norm is not None else logsumexp(v)
        prob = np.exp(v - logz[:, None])
        before = np.cumsum(prob, axis=1) - prob
        keep = (before < top_p[sub, None]) | (before <= 0)  # the first survivor always stays
        vals[sub] = np.where(keep, vals[sub], -np.inf)
        ids, vals = _trim(ids, vals)
    min_p = np.array([p.min_p for p in params])
    sub = np.flatnonzero(min_p > 0)
    if sub.size:
        kept = vals[sub]
        floor = kept.max(axis=1) + np.log(min_p[sub]).astype(np.float32)
        vals[sub] = np.where(kept >= floor[:, None], kept, -np.inf)
    temperature = np.array([p.temperature for p in params])
    scaled = vals.astype(np.float64)
    scaled -= scaled.max(axis=1, keepdims=True)
    scaled /= temperature[:, None]
    weights = np.exp(scaled)
    cdf = np.cumsum(weights, axis=1)
    return ids[np.arange(rows), inverse_cdf(weights, cdf, uniforms * cdf[:, -1])]


def _trim(ids: IndexArray, vals: FloatArray) -> tuple[IndexArray, FloatArray]:
    """Drop the columns past the last candidate that any row kept."""
    alive = vals[:, ::-1] > -np.inf
    width = vals.shape[1] - int(np.argmax(alive, axis=1).min())
    return ids[:, :width], vals[:, :width]


def _typical(vals: FloatArray, typical_p: DoubleArray) -> FloatArray:
    """llama.cpp's locally typical sampling: keep the tokens whose surprise is closest to the
    entropy, in that order, until their mass exceeds typical_p (that token included)."""
    logp = vals.astype(np.float64)
    logp -= logsumexp(logp)[:, None]
    prob = np.exp(logp)
    entropy = -np.multiply(prob, logp, out=np.zeros_like(prob), where=prob > 0).sum(axis=1)
    order = _argsort_ascending(np.abs(logp + entropy[:, None]).astype(np.float32))
    ranked = np.take_along_axis(prob, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked
    keep = np.empty(vals.shape, dtype=bool)
    np.put_along_axis(keep, order, (before <= typical_p[:, None]) & (ranked > 0), axis=1)
    return np.where(keep, vals, np.float32(-np.inf))


def top(x: FloatArray, k: int) -> tuple[IndexArray, FloatArray]:
    """The k largest logits of every row and their token ids, sorted descending.

    Split each row into `width` strided blocks (block j: tokens j, j + blocks, ...) and take
    their maxima in one pass; the k largest logits all lie in the k blocks with the largest
    maxima (k blocks whose maxima are >= a logit put at least k logits at or above it), so one
    small argpartition over those blocks' members finds them.
    """
    rows, vocab = x.shape
    if k >= vocab:
        return sort_desc(x, np.broadcast_to(np.arange(vocab), x.shape))
    width = max(1, int(np.sqrt(vocab / k) / 2))
    blocks = vocab // width
    if k * width > vocab // 4 or blocks <= k:
        candidates = np.argpartition(x, vocab - k, axis=1)[:, vocab - k :]
    else:
        main = blocks * width
        maxima = x[:, :main].reshape(rows, width, blocks).max(axis=1)
        best = np.argpartition(maxima, blocks - k, axis=1)[:, blocks - k :]
        candidates = (best[:, :, None] + np.arange(0, main, blocks)).reshape(rows, k * width)
        if main < vocab:
            tail = np.broadcast_to(np.arange(main, vocab), (rows, vocab - main))
            candidates = np.concatenate((candidates, tail), axis=1)
        values = np.take_along_axis(x, candidates, axis=1)
        n = values.shape[1]
        chosen = np.argpartition(values, n - k, axis=1)[:, n - k :]
        candidates = np.take_along_axis(candidates, chosen, axis=1)
    return sort_desc(np.take_along_axis(x, candidates, axis=1), candidates)


def sort_desc(values: FloatArray, ids: IndexArray) -> tuple[IndexArray, FloatArray]:
    """`ids` and their `values` sorted by value descending, ties by id.

    One sort of 64-bit keys (order-preserving value bits above, the id below) is faster than
    an argsort and makes the order canonical; the values are decoded from the keys."""
    keys = (~_ascending_bits(values)).astype(np.uint64) << np.uint64(32)
    keys |= ids.astype(np.uint64)
    keys.sort(axis=1)
    ascending = ~(keys >> np.uint64(32)).astype(np.uint32)
    bits = np.where(ascending >> np.uint32(31), ascending & np.uint32(0x7FFFFFFF), ~ascending)
    return (keys & _LOW32).astype(np.int64), bits.view(np.float32)


def _argsort_ascending(values: FloatArray) -> IndexArray:
    """A stable argsort of every row (ties in position order), by the same packed keys."""
    keys = _ascending_bits(values).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(values.shape[1], dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & _LOW32).astype(np.int64)


def _ascending_bits(values: FloatArray) -> npt.NDArray[np.uint32]:
    """uint32 keys in the same order as the float32 values (-0.0 is taken as 0.0)."""
    bits = np.add(values, np.float32(0), dtype=np.float32).view(np.uint32)
    return np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))


def inverse_cdf(weights: DoubleArray, cdf: DoubleArray, target: DoubleArray) -> IndexArray:
    """Per row, the first index whose cdf exceeds target, never one of weight 0."""
    pick = (cdf <= target[:, None]).sum(axis=1)
    last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    return np.minimum(pick, last)


def logsumexp(x: DoubleArray) -> DoubleArray:
    top = x.max(axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    total: DoubleArray = np.log(np.exp(x - top[:, None]).sum(axis=1))
    return total + top
