"""The sampler: one token per row of a batch of logits, vectorised over the rows.

`SamplingParams` (Ollama's option names) lives in `olla.engine.sampling_params` and is
re-exported here; the array kernels are in `olla.engine.sampling_kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from olla.engine.constraint import Constraint
from olla.engine.sampling_kernels import (
    DoubleArray,
    FloatArray,
    IndexArray,
    filter_and_draw,
    inverse_cdf,
    sort_desc,
    top,
)
from olla.engine.sampling_params import SamplingParams

__all__ = ["SampleRequest", "Sampler", "SamplingParams", "TokenLogprob"]

# (token, its log-probability, the most likely alternatives as (token, log-probability))
TokenLogprob = tuple[int, float, list[tuple[int, float]]]


def _logprobs(row: FloatArray, token: int, params: SamplingParams) -> TokenLogprob:
    """Log-softmax of the row the draw saw (penalties applied, before temperature) at `token`,
    and the `params.logprobs` most likely tokens."""
    peak = float(row.max())
    norm = peak + float(np.log(np.exp((row - peak).astype(np.float64)).sum()))
    n = params.logprobs
    best: list[tuple[int, float]] = []
    if n:
        ids = np.argpartition(row, -n)[-n:]
        ids = ids[np.argsort(row[ids])[::-1]]
        best = [(int(i), float(row[i]) - norm) for i in ids]
    return token, float(row[token]) - norm, best


class SampleRequest(Protocol):
    """What the sampler needs of a sequence; the engine's Sequence implements it."""

    @property
    def seq_id(self) -> int: ...

    @property
    def params(self) -> SamplingParams: ...

    @property
    def constraint(self) -> Constraint | None:
        """What the next token must obey (a grammar), if anything."""
        ...

    def recent_tokens(self, n: int) -> Sequence[int] | npt.NDArray[np.integer[Any]]:
        """The last `n` tokens of prompt + output; all of them when n == -1."""
        ...


# Candidate counts tried, in turn, for rows with top_k off and top_p or typical_p < 1: the first
# whose mass reaches top_p holds the whole nucleus (the typical set likewise); rows where none
# does, or where 4 * count > vocab, sort the whole vocab.
_ESCALATION = (256, 2048, 16384)
_FLAT_BLOCK = 1024  # block size of the two-level inverse CDF over the whole vocab
# Greedy rows of a batch at least this large (rows x vocab) take their argmax on several
# threads (numpy lets the GIL go): 64 rows of Llama 3's 128,256 logits are 33 MB to read.
_PARALLEL_ARGMAX = 1 << 21


class Sampler:
    """Picks one token per row of a batch of logits, vectorised over rows (never per vocab entry).

    The chain is llama.cpp's (and so Ollama's): repetition penalties over each sequence's last
    `repeat_last_n` tokens, then greedy rows (temperature 0 or top_k 1) take the argmax, the
    others go through top_k, typical_p, top_p, min_p (relative to the most likely token) and
    temperature, and draw by inverse CDF with one uniform from the sequence's own generator.
    top_p, typical_p and min_p see the probabilities of the logits before temperature, each
    renormalised over the candidates that survived the steps before it.

    Rows take one of four paths, chosen from their own parameters only (so a row's token never
    depends on the rest of its batch):
    - top_k in (1, vocab): the top K = max top_k candidates of every such row, found exactly
      from per-block maxima (one strided pass over the row, no argpartition of the vocab),
      sorted descending once by a packed (value, token id) key, then per-row masks;
    - top_k off, top_p < 1 (typical off): the nucleus, found by taking the top 256, 2048, ...
      candidates until their mass (over the whole vocab) reaches top_p;
    - top_k off, typical_p < 1: the entropy over the whole vocab, then the 256, 2048, ...
      tokens whose surprise is closest to it until their mass exceeds typical_p;
    - top_k off, top_p 1, typical 1: no sort at all; min_p masks, temperature scales, and a
      two-level inverse CDF (block sums, then within one block) draws over the whole vocab.
    Where the escalation runs out (very flat rows), the whole vocab is sorted. Ties in logits
    are broken by token id, so the order of candidates is canonical.
    """

    def __init__(self, vocab_size: int, threads: int = 1) -> None:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.vocab_size = vocab_size
        self._pool = ThreadPoolExecutor(threads, "argmax") if threads > 1 else None
        self._threads = threads
        self._rngs: dict[int, np.random.Generator] = {}
        # seq id -> (token, log-probability, [(alternative, log-probability)...]) of its last draw
        self._logprobs: dict[int, TokenLogprob] = {}
        self._scratch: FloatArray = np.empty((0, vocab_size), dtype=np.float32)

    def forget(self, seq_id: int) -> None:
        """Drop the random generator of a sequence that ended."""
        self._rngs.pop(seq_id, None)
        self._logprobs.pop(seq_id, None)

    def take_logprobs(self, seq_id: int) -> TokenLogprob | None:
        """The log-probabilities of the token just drawn for `seq_id`, if it asked for them."""
        return self._logprobs.pop(seq_id, None)

    def sample(self, logits: FloatArray, seqs: Sequence[SampleRequest]) -> npt.NDArray[np.int32]:
        """One token per row of `logits` (rows, vocab), for the sequence of that row.

        `logits` is modified in place (penalties are applied to it).
        """
        if logits.ndim != 2 or logits.shape != (len(seqs), self.vocab_size):
            raise ValueError(
                f"logits have shape {logits.shape}, expected ({len(seqs)}, {self.vocab_size})"
            )
        if logits.dtype != np.float32:
            raise ValueError(f"logits must be float32, not {logits.dtype}")
        if not seqs:
            return np.empty(0, dtype=np.int32)
        self.penalize(logits, seqs)
        params = [s.params for s in seqs]
        uniforms = np.zeros(len(seqs))
        for row, seq in enumerate(seqs):
            if not params[row].greedy:
                uniforms[row] = self._rng(seq).random()
        out = self._draw(logits, params, uniforms)
        for row, seq in enumerate(seqs):  # one pass; most rows have neither
            constraint = seq.constraint
            if constraint is not None:
                if not constraint.allows(int(out[row])):
                    # drawn outside the grammar: draw again among what it allows, same uniform
                    constraint.mask(logits[row])
                    one = slice(row, row + 1)
                    out[row] = self._draw(logits[one], params[one], uniforms[one])[0]
                constraint.accept(int(out[row]))
            if params[row].logprobs >= 0:
                self._logprobs[seq.seq_id] = _logprobs(logits[row], int(out[row]), params[row])
        return out

    def _draw(
        self, logits: FloatArray, params: list[SamplingParams], uniforms: DoubleArray
    ) -> npt.NDArray[np.int32]:
        """One token per row of penalised `logits`: greedy rows by argmax, the others by path."""
        out = np.empty(len(params), dtype=np.int32)
        greedy = [i for i, p in enumerate(params) if p.greedy]
        if len(greedy) == len(params):
            self._argmax(logits, out)
            return out
        if greedy:
            rows = np.array(greedy)
            out[rows] = self._argmax(logits[rows], np.empty(len(rows), dtype=np.int32))
        paths: dict[str, list[int]] = {"top_k": [], "nucleus": [], "typical": [], "flat": []}
        for i, p in enumerate(params):
            if not p.greedy:
                paths[self._path(p)].append(i)
        for path, rows_list in paths.items():
            if rows_list:
                rows = np.array(rows_list)
                sub = [params[i] for i in rows]
                x = logits if len(rows) == len(logits) else logits[rows]
                out[rows] = getattr(self, f"_sample_{path}")(x, sub, uniforms[rows])
        return out

    def _argmax(self, logits: FloatArray, out: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Each row's argmax into `out`; a large batch split by rows over the threads."""
        if self._pool is None or logits.size < _PARALLEL_ARGMAX:
            out[:] = logits.argmax(axis=1)
            return out
        bounds = np.linspace(0, len(logits), min(self._threads, len(logits)) + 1).astype(int)

        def part(i: int) -> None:
            lo, hi = bounds[i], bounds[i + 1]
            out[lo:hi] = logits[lo:hi].argmax(axis=1)

        list(self._pool.map(part, range(len(bounds) - 1)))
        return out

    def penalize(self, logits: FloatArray, seqs: Sequence[SampleRequest]) -> None:
        """Apply each row's repeat, frequency and presence penalties to `logits`, in place.

        As llama.cpp: for every token that occurs `count` > 0 times in the last repeat_last_n
        tokens, logit = logit / repeat_penalty if logit > 0 else logit * repeat_penalty, then
        logit -= count * frequency_penalty + presence_penalty.
        """
        rows: list[int] = []
        recents: list[Sequence[int] | npt.NDArray[np.integer[Any]]] = []
        for row, seq in enumerate(seqs):
            p = seq.params
            if not p.penalized:
                continue
            recent = seq.recent_tokens(p.repeat_last_n)
            if len(recent):
                rows.append(row)
                recents.append(recent)
        if not rows:
            return
        vocab = self.vocab_size
        width = max(len(r) for r in recents)
        # One (rows, width) array of token ids, padded with the sentinel `vocab`; sorting each
        # row groups equal tokens, so runs give each distinct token and its count at once.
        tokens = np.full((len(rows), width), vocab, dtype=np.int64)
        for i, recent in enumerate(recents):
            tokens[i, : len(recent)] = recent
        tokens.sort(axis=1)
        flat = tokens.ravel()
        starts = np.ones(flat.size, dtype=bool)
        starts[1:] = flat[1:] != flat[:-1]
        starts[::width] = True
        first = np.flatnonzero(starts)
        counts = np.diff(first, append=flat.size)
        token = flat[first]
        which = first // width
        real = (token >= 0) & (token < vocab)
        token, which, counts = token[real], which[real], counts[real]

        def per_row(name: str) -> FloatArray:
            values = [float(getattr(seqs[r].params, name)) for r in rows]
            return np.array(values, dtype=np.float32)[which]

        row_index = np.array(rows)[which]
        values = logits[row_index, token]
        repeat = per_row("repeat_penalty")
        values = np.where(values <= 0, values * repeat, values / repeat)
        values -= counts.astype(np.float32) * per_row("frequency_penalty")
        values -= per_row("presence_penalty")
        logits[row_index, token] = values

    def _path(self, p: SamplingParams) -> str:
        if 0 < p.top_k < self.vocab_size:
            return "top_k"
        if p.typical_p < 1:
            return "typical"
        if p.top_p < 1:
            return "nucleus"
        return "flat"

    def _sample_top_k(
        self, x: FloatArray, params: list[SamplingParams], uniforms: DoubleArray
    ) -> IndexArray:
        ids, vals = top(x, max(p.top_k for p in params))
        return filter_and_draw(ids, vals, params, uniforms)

    def _sample_nucleus(
        self, x: FloatArray, params: list[SamplingParams], uniforms: DoubleArray
    ) -> IndexArray:
        """top_k off, top_p < 1: take the top 256, 2048, ... until their mass reaches top_p."""
        out = np.empty(len(x), dtype=np.int64)
        norm = self._logsumexp(x)
        top_p = np.array([p.top_p for p in params])
        pending = np.arange(len(x))
        for k in _ESCALATION:
            if not pending.size or 4 * k > self.vocab_size:
                break
            ids, vals = top(x if len(pending) == len(x) else x[pending], k)
            mass = np.exp(vals.astype(np.float64) - norm[pending, None]).sum(axis=1)
            done = mass >= top_p[pending]
            if done.any():
                rows = pending[done]
                out[rows] = filter_and_draw(
                    ids[done], vals[done], [params[i] for i in rows], uniforms[rows], norm[rows]
                )
            pending = pending[~done]
        if pending.size:
            out[pending] = self._sample_full(
                x[pending], [params[i] for i in pending], uniforms[pending]
            )
        return out

    def _sample_typical(
        self, x: FloatArray, params: list[SamplingParams], uniforms: DoubleArray
    ) -> IndexArray:
        """top_k off, typical_p < 1: typical sampling needs the entropy of the whole vocab, but
        then only the tokens whose surprise is closest to it; take the 256, 2048, ... closest
        until their mass exceeds typical_p, as for the nucleus."""
        out = np.empty(len(x), dtype=np.int64)
        norm = self._logsumexp(x)
        closeness = self._buffer(len(x))
        np.subtract(x, norm.astype(np.float32)[:, None], out=closeness)  # log-probabilities
        entropy = -(np.exp(closeness) * closeness).sum(axis=1)
        np.add(closeness, entropy[:, None], out=closeness)
        np.abs(closeness, out=closeness)
        np.negative(closeness, out=closeness)  # -|log p + H|: the largest are the most typical
        typical = np.array([p.typical_p for p in params])
        pending = np.arange(len(x))
        for k in _ESCALATION:
            if not pending.size or 4 * k > self.vocab_size:
                break
            some = len(pending) < len(x)
            ids, _ = top(closeness[pending] if some else closeness, k)
            vals = np.take_along_axis(x[pending] if some else x, ids, axis=1)
            prob = np.exp(vals.astype(np.float64) - norm[pending, None])
            before = np.cumsum(prob, axis=1) - prob
            done = before[:, -1] + prob[:, -1] > typical[pending]
            if done.any():
                rows = pending[done]
                keep = (before[done] <= typical[rows, None]) & (prob[done] > 0)
                ids, vals = sort_desc(np.where(keep, vals[done], np.float32(-np.inf)), ids[done])
                out[rows] = filter_and_draw(
                    ids, vals, [params[i] for i in rows], uniforms[rows], skip_typical=True
                )
            pending = pending[~done]
        if pending.size:
            out[pending] = self._sample_full(
                x[pending], [params[i] for i in pending], uniforms[pending]
            )
        return out

    def _sample_full(
        self, x: FloatArray, params: list[SamplingParams], uniforms: DoubleArray
    ) -> IndexArray:
        """The fallback: sort the whole vocab of every row (slow, for very flat rows)."""
        ids, vals = sort_desc(x, np.broadcast_to(np.arange(x.shape[1]), x.shape))
        return filter_and_draw(ids, vals, params, uniforms)

    def _buffer(self, rows: int) -> FloatArray:
        if len(self._scratch) < rows:
            self._scratch = np.empty((rows, self.vocab_size), dtype=np.float32)
        return self._scratch[:rows]

    def _logsumexp(self, x: FloatArray) -> DoubleArray:
        """log(sum(exp(row))) of every row over the whole vocab."""
        top = x.max(axis=1)
        buf = self._buffer(len(x))
        np.subtract(x, top[:, None], out=buf)
        np.exp(buf, out=buf)
        total: DoubleArray = np.log(buf.sum(axis=1).astype(np.float64))
        return total + top

    def _sample_flat(
        self, x: FloatArray, params: list[SamplingParams], uniforms: DoubleArray
    ) -> IndexArray:
        """Draw over the whole vocab (in token order) with min_p and temperature only."""
        rows, vocab = x.shape
        w = self._buffer(rows)
        np.subtract(x, x.max(axis=1, keepdims=True), out=w)
        min_p = np.array([p.min_p for p in params])
        if (min_p > 0).any():
            with np.errstate(divide="ignore"):
                floor = np.log(min_p).astype(np.float32)
            np.putmask(w, w < floor[:, None], np.float32(-np.inf))
        temperature = np.array([p.temperature for p in params], dtype=np.float32)
        np.divide(w, temperature[:, None], out=w)
        np.exp(w, out=w)
        size = min(_FLAT_BLOCK, vocab)
        blocks, main = vocab // size, vocab // size * size
        sums = w[:, :main].reshape(rows, blocks, size).sum(axis=2).astype(np.float64)
        if main < vocab:
            sums = np.concatenate((sums, w[:, main:].sum(axis=1, dtype=np.float64)[:, None]), 1)
        cdf = np.cumsum(sums, axis=1)
        target = uniforms * cdf[:, -1]
        block = inverse_cdf(sums, cdf, target)
        everyone = np.arange(rows)
        target -= np.where(block > 0, cdf[everyone, block - 1], 0.0)
        ids = block[:, None] * size + np.arange(size)
        inside = ids < vocab
        ids = np.minimum(ids, vocab - 1)
        weights = np.where(inside, np.take_along_axis(w, ids, axis=1), 0).astype(np.float64)
        pick = inverse_cdf(weights, np.cumsum(weights, axis=1), target)
        return ids[everyone, pick]

    def _rng(self, seq: SampleRequest) -> np.random.Generator:
        rng = self._rngs.get(seq.seq_id)
        if rng is None:
            seed = seq.params.seed
            # Ollama sends seed -1 for "random"; numpy takes OS entropy for None.
            rng = np.random.default_rng(seed if seed is not None and seed >= 0 else None)
            self._rngs[seq.seq_id] = rng
        return rng
