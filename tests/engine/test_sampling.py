"""Sampler: penalties, greedy, top_k / typical_p / top_p / min_p, temperature, seeds; and
SamplingParams' validation. A plain per-row transcription of llama.cpp's sampler chain
(`reference_probs`) is the oracle for what may be drawn and how often."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from olla.engine.constraint import AllowedTokens
from olla.engine.sampling import Sampler, SamplingParams
from olla.engine.sampling_kernels import top as _top
from olla.errors import InvalidRequest

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)


@dataclass
class Req:
    """A sequence as the sampler sees it."""

    seq_id: int
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)
    constraint: AllowedTokens | None = None

    def recent_tokens(self, n: int) -> list[int]:
        self.asked.append(n)
        if n < 0:
            return list(self.tokens)
        return self.tokens[max(0, len(self.tokens) - n) :]


@dataclass
class ArrayReq(Req):
    """A sequence that keeps its tokens in a numpy array."""

    def recent_tokens(self, n: int) -> np.ndarray:  # type: ignore[override]
        return np.array(super().recent_tokens(n), dtype=np.int32)


def logits_of(rng: np.random.Generator, rows: int, vocab: int, scale: float = 2.0) -> np.ndarray:
    return (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)


def reference_probs(logits: npt.NDArray[np.float32], p: SamplingParams) -> np.ndarray:
    """The distribution of the next token, as llama.cpp's chain computes it, one row, in loops
    (no penalties: apply them to `logits` first)."""
    vocab = len(logits)
    cand = sorted(((float(logits[t]), t) for t in range(vocab)), key=lambda c: (-c[0], c[1]))
    out = np.zeros(vocab)
    if p.greedy:
        out[cand[0][1]] = 1.0
        return out

    def softmax(c: list[tuple[float, int]], temperature: float = 1.0) -> list[float]:
        top = max(v for v, _ in c)
        e = [math.exp((v - top) / temperature) for v, _ in c]
        return [x / sum(e) for x in e]

    if 0 < p.top_k < vocab:
        cand = cand[: p.top_k]
    if p.typical_p < 1:
        probs = softmax(cand)
        entropy = -sum(q * math.log(q) for q in probs if q > 0)
        surprise = [-math.log(q) if q > 0 else math.inf for q in probs]
        order = sorted(range(len(cand)), key=lambda i: (abs(surprise[i] - entropy), i))
        kept, total = [], 0.0
        for i in order:
            kept.append(i)
            total += probs[i]
            if total > p.typical_p:
                break
        cand = [cand[i] for i in sorted(kept)]
    if p.top_p < 1:
        probs, total = softmax(cand), 0.0
        for i, q in enumerate(probs):
            total += q
            if total >= p.top_p:
                cand = cand[: i + 1]
                break
    if p.min_p > 0:
        floor = cand[0][0] + math.log(p.min_p)
        cand = [c for c in cand if c[0] >= floor]
    for (_, t), q in zip(cand, softmax(cand, p.temperature), strict=True):
        out[t] = q
    return out


def draw_many(
    logits: npt.NDArray[np.float32], params: SamplingParams, rows: int, steps: int
) -> np.ndarray:
    """`rows * steps` draws for one row of logits: `rows` sequences drawing `steps` times each,
    seeded from `params.seed` on (0 when unset)."""
    sampler = Sampler(len(logits))
    first = params.seed or 0
    reqs = [Req(i, replace(params, seed=first + i)) for i in range(rows)]
    draws = [sampler.sample(np.repeat(logits[None], rows, axis=0), reqs) for _ in range(steps)]
    return np.concatenate(draws)


def chi2_bound(df: int) -> float:
    """The chi-square value exceeded with probability ~1e-6 (Wilson-Hilferty): far above what an
    honest sampler gives, yet a sampler off by a few percent on a bin fails it."""
    z = 4.75
    return float(df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3)


def assert_distribution(draws: np.ndarray, expected: np.ndarray, bins: int = 10) -> None:
    """Every draw has positive expected probability, and the counts in `bins` groups of tokens
    (by expected probability, each of about equal mass) pass a chi-square test."""
    drawn = np.flatnonzero(np.bincount(draws, minlength=len(expected)))
    assert set(drawn) <= set(np.flatnonzero(expected > 0)), "drew a token that was filtered out"
    order = np.argsort(-expected, kind="stable")
    mass = np.cumsum(expected[order])
    group = np.zeros(len(expected), dtype=int)
    start = mass - expected[order]  # the mass before each token, in that order
    group[order] = np.minimum(np.floor(start * bins).astype(int), bins - 1)
    n = len(draws)
    observed = np.bincount(group[draws], minlength=bins)
    want = np.bincount(group, weights=expected, minlength=bins) * n
    used = want > 0
    assert want[used].min() >= 5, "too few draws for the chi-square test"
    chi2 = float((((observed - want) ** 2)[used] / want[used]).sum())
    assert chi2 < chi2_bound(max(1, int(used.sum()) - 1)), (chi2, observed, want)


# --- greedy and penalties -------------------------------------------------------------------


def test_greedy_rows_take_the_argmax_and_top_k_1_is_greedy() -> None:
    rng = np.random.default_rng(0)
    logits = logits_of(rng, 6, 300)
    params = [GREEDY, SamplingParams(top_k=1, temperature=1.5, repeat_penalty=1.0)] * 3
    reqs = [Req(i, p) for i, p in enumerate(params)]
    assert Sampler(300).sample(logits.copy(), reqs).tolist() == logits.argmax(axis=1).tolist()
    mixed = [Req(0, GREEDY), Req(1, SamplingParams(seed=3, repeat_penalty=1.0))]
    tokens = Sampler(300).sample(logits[:2].copy(), mixed)
    assert tokens.dtype == np.int32 and tokens[0] == logits[0].argmax()


def test_penalties_follow_llama_cpp_formulas() -> None:
    base = np.array([[2.0, -1.0, 0.5, 1.9, 0.0, -3.0]], dtype=np.float32)
    history = [0, 1, 0, 4]  # token 0 twice, 1 and 4 once
    params = SamplingParams(
        temperature=0, repeat_penalty=2.0, frequency_penalty=0.25, presence_penalty=0.5
    )
    logits = base.copy()
    Sampler(6).penalize(logits, [Req(0, params, history)])
    # 0: 2/2 - 2*0.25 - 0.5; 1: -1*2 - 0.25 - 0.5; 4: 0 is not positive, 0*2 - 0.25 - 0.5
    assert logits[0].tolist() == pytest.approx([0.0, -2.75, 0.5, 1.9, -0.75, -3.0])
    # and the argmax moves from token 0 to token 3
    assert Sampler(6).sample(base.copy(), [Req(0, GREEDY, history)])[0] == 0
    assert Sampler(6).sample(base.copy(), [Req(0, params, history)])[0] == 3


@pytest.mark.parametrize(
    ("options", "token0"),
    [
        ({"repeat_penalty": 1.5}, 2 / 1.5),  # 1.333 < 1.9
        ({"repeat_penalty": 1.0, "frequency_penalty": 0.2}, 2 - 2 * 0.2),  # 1.6
        ({"repeat_penalty": 1.0, "presence_penalty": 0.05}, 2 - 0.05),  # 1.95 > 1.9
        ({"repeat_penalty": 0.5}, 2 / 0.5),  # < 1 rewards repetition
    ],
)
def test_each_penalty_alone(options: dict[str, Any], token0: float) -> None:
    logits = np.array([[2.0, -1.0, 0.5, 1.9]], dtype=np.float32)
    Sampler(4).penalize(logits, [Req(0, SamplingParams(temperature=0, **options), [0, 0])])
    assert logits[0, 0] == pytest.approx(token0)
    assert logits[0, 1:].tolist() == pytest.approx([-1.0, 0.5, 1.9])


def test_repeat_last_n_window_zero_and_whole_context() -> None:
    def penalised(repeat_last_n: int) -> tuple[list[float], list[int]]:
        logits = np.full((1, 6), 1.0, dtype=np.float32)
        params = SamplingParams(repeat_penalty=2.0, repeat_last_n=repeat_last_n)
        req = Req(0, params, [0, 1, 5, 5])
        Sampler(6).penalize(logits, [req])
        return logits[0].tolist(), req.asked

    assert penalised(2) == ([1, 1, 1, 1, 1, 0.5], [2])  # only the last two: 5, 5
    assert penalised(3) == ([1, 0.5, 1, 1, 1, 0.5], [3])
    assert penalised(0) == ([1.0] * 6, [])  # disabled: the history is not even asked for
    assert penalised(-1) == ([0.5, 0.5, 1, 1, 1, 0.5], [-1])  # the whole context
    assert penalised(100) == (penalised(-1)[0], [100])  # more than there is


def test_penalties_skip_rows_without_penalties_or_history() -> None:
    logits = np.ones((3, 4), dtype=np.float32)
    reqs = [
        Req(0, SamplingParams(repeat_penalty=1.0), [1, 2]),
        Req(1, SamplingParams(repeat_penalty=2.0), []),
        ArrayReq(2, SamplingParams(repeat_penalty=2.0), [3, 3, 9, -1]),
    ]
    Sampler(4).penalize(logits, reqs)
    assert reqs[0].asked == []  # nothing to apply: not asked
    assert logits.tolist() == [[1] * 4, [1] * 4, [1, 1, 1, 0.5]]  # out-of-vocab ids ignored


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.sampled_from([5, 64, 1000]))
def test_vectorised_penalties_equal_a_per_row_loop(seed: int, rows: int, vocab: int) -> None:
    rng = np.random.default_rng(seed)
    logits = logits_of(rng, rows, vocab)
    reqs = []
    for i in range(rows):
        params = SamplingParams(
            repeat_penalty=float(rng.choice([1.0, 0.8, 1.1, 1.3])),
            repeat_last_n=int(rng.choice([-1, 0, 1, 4, 64])),
            frequency_penalty=float(rng.choice([0.0, 0.1, -0.2])),
            presence_penalty=float(rng.choice([0.0, 0.3])),
        )
        history = rng.integers(0, vocab, int(rng.integers(0, 80))).tolist()
        reqs.append(Req(i, params, history))
    expected = logits.copy()
    for row, req in enumerate(reqs):
        p = req.params
        window = [] if p.repeat_last_n == 0 else req.recent_tokens(p.repeat_last_n)
        for token in set(window):
            value = float(expected[row, token])
            value = value * p.repeat_penalty if value <= 0 else value / p.repeat_penalty
            value -= window.count(token) * p.frequency_penalty + p.presence_penalty
            expected[row, token] = value
    Sampler(vocab).penalize(logits, reqs)
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 5000), st.data())
def test_top_candidates_are_exact_and_sorted(seed: int, vocab: int, data: st.DataObject) -> None:
    """The block-maxima search finds the k largest logits (ties included, -inf and negative
    zeros too), sorted descending with ties in token order."""
    k = data.draw(st.integers(1, vocab - 1))
    rng = np.random.default_rng(seed)
    logits = logits_of(rng, 3, vocab, 3.0)
    if data.draw(st.booleans()):  # many ties
        logits = np.round(logits).astype(np.float32)
    logits[rng.random(logits.shape) < 0.05] = -np.inf
    logits[rng.random(logits.shape) < 0.05] = -0.0
    ids, vals = _top(logits, k)
    assert ids.shape == vals.shape == (3, k)
    for row in range(3):
        assert len(set(ids[row].tolist())) == k
        assert vals[row].tolist() == logits[row, ids[row]].tolist()
        assert vals[row].tolist() == sorted(logits[row].tolist(), reverse=True)[:k]
        pairs = list(zip((-vals[row]).tolist(), ids[row].tolist(), strict=True))
        assert pairs == sorted(pairs)


# --- the filters ------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [40, 0])
@pytest.mark.parametrize("top_p", [0.0, 1e-6])
def test_tiny_top_p_keeps_only_the_top_token(top_k: int, top_p: float) -> None:
    logits = logits_of(np.random.default_rng(1), 1, 2048, scale=0.5)  # flat: many candidates
    params = SamplingParams(top_k=top_k, top_p=top_p, temperature=2.0, repeat_penalty=1.0)
    assert set(draw_many(logits[0], params, 50, 4).tolist()) == {int(logits.argmax())}


def test_min_p_keeps_the_tokens_within_a_factor_of_the_best() -> None:
    logits = np.log(np.array([[0.4, 0.3, 0.1, 0.05, 0.15]], dtype=np.float32))
    for top_k in (0, 2):  # without and with a top_k
        params = SamplingParams(top_k=top_k, top_p=1.0, min_p=0.3, repeat_penalty=1.0)
        # 0.3 * 0.4 = 0.12: tokens 0, 1 and 4 stay (4 only when top_k lets it in)
        allowed = {0, 1, 4} if top_k == 0 else {0, 1}
        assert set(draw_many(logits[0], params, 100, 3).tolist()) == allowed


def test_typical_p_keeps_the_tokens_closest_to_the_entropy() -> None:
    # p = 1/2, 1/4, 1/8, 1/8: entropy 1.213 nats; surprise 0.69, 1.39, 2.08, 2.08.
    # Closest first: token 1 (0.17 off), then token 0 (0.52 off), then 2 and 3 (0.87 off).
    logits = np.log(np.array([0.5, 0.25, 0.125, 0.125], dtype=np.float32))
    always_1 = SamplingParams(top_k=0, top_p=1.0, typical_p=0.2, repeat_penalty=1.0)
    assert set(draw_many(logits, always_1, 40, 2).tolist()) == {1}  # not the most likely
    two = SamplingParams(top_k=0, top_p=1.0, typical_p=0.5, repeat_penalty=1.0)
    draws = draw_many(logits, two, 300, 10)
    assert set(draws.tolist()) == {0, 1}
    assert_distribution(draws, np.array([2 / 3, 1 / 3, 0, 0]), bins=2)


# --- distributions ----------------------------------------------------------------------------

CASES = [
    # (vocab, logit scale, params): every path of the sampler
    (64, 2.0, SamplingParams(top_k=8, top_p=1.0, temperature=0.7)),  # top_k
    (64, 2.0, SamplingParams(top_k=0, top_p=1.0, temperature=1.3)),  # flat: no sort
    (1500, 1.0, SamplingParams(top_k=0, top_p=1.0, min_p=0.2)),  # flat, min_p, tail block
    (500, 2.0, SamplingParams()),  # Ollama's defaults: top_k 40, top_p 0.9
    (500, 2.0, SamplingParams(top_k=50, typical_p=0.6, min_p=0.05, temperature=0.5)),
    (4096, 3.0, SamplingParams(top_k=0, top_p=0.8)),  # nucleus within the top 256
    (9000, 1.0, SamplingParams(top_k=0, top_p=0.5)),  # nucleus needs the top 2048
    (3000, 0.3, SamplingParams(top_k=0, top_p=0.7, temperature=1.5)),  # nucleus: whole sort
    (4096, 3.0, SamplingParams(top_k=0, typical_p=0.7)),  # typical within the closest 256
    (1000, 0.5, SamplingParams(top_k=0, typical_p=0.9, top_p=0.95)),  # typical: whole sort
]


@pytest.mark.parametrize(("vocab", "scale", "params"), CASES)
def test_draws_follow_the_reference_distribution(
    vocab: int, scale: float, params: SamplingParams
) -> None:
    logits = logits_of(np.random.default_rng(vocab), 1, vocab, scale)[0]
    params = replace(params, repeat_penalty=1.0, seed=int(1000 * vocab * scale))
    draws = draw_many(logits, params, 200, 20)
    assert_distribution(draws, reference_probs(logits, params))


def test_the_distribution_check_has_teeth() -> None:
    """Draws at temperature 1 fail against the distribution at temperature 1.3."""
    vocab, scale, params = CASES[0]
    logits = logits_of(np.random.default_rng(vocab), 1, vocab, scale)[0]
    params = replace(params, repeat_penalty=1.0, temperature=1.0)
    draws = draw_many(logits, params, 200, 20)
    assert_distribution(draws, reference_probs(logits, params))
    with pytest.raises(AssertionError):
        assert_distribution(draws, reference_probs(logits, replace(params, temperature=1.3)))


def test_one_sequence_many_draws_match_its_softmax() -> None:
    """One seeded sequence drawing 3000 times from a known 6-token softmax."""
    logits = np.array([[2.0, 1.5, 1.0, 0.0, -0.5, -9.0]], dtype=np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=1234, repeat_penalty=1.0)
    sampler, req = Sampler(6), Req(7, params)
    draws = np.array([sampler.sample(logits.copy(), [req])[0] for _ in range(3000)])
    expected = np.exp(logits[0].astype(np.float64))
    assert_distribution(draws, expected / expected.sum(), bins=5)


PARAMS = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.3, 0.8, 1.0, 2.0]),
    top_k=st.sampled_from([0, 1, 2, 5, 40, 100, 5000]),
    top_p=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
    min_p=st.sampled_from([0.0, 0.05, 0.5]),
    typical_p=st.sampled_from([0.3, 0.9, 1.0]),
    repeat_penalty=st.just(1.0),
)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(PARAMS, min_size=1, max_size=6), st.data())
def test_every_draw_is_allowed_by_the_reference(
    seed: int, params: list[SamplingParams], data: st.DataObject
) -> None:
    vocab = data.draw(st.sampled_from([3, 50, 1100]))
    scale = data.draw(st.sampled_from([0.2, 1.0, 4.0]))
    logits = logits_of(np.random.default_rng(seed), len(params), vocab, scale)
    reqs = [Req(i, replace(p, seed=seed + i)) for i, p in enumerate(params)]
    tokens = Sampler(vocab).sample(logits.copy(), reqs)
    for row, (token, p) in enumerate(zip(tokens, params, strict=True)):
        assert reference_probs(logits[row], p)[token] > 0


# --- seeds and batches ------------------------------------------------------------------------


def run_steps(
    sampler: Sampler, reqs: list[Req], logits: list[np.ndarray], rows: list[int]
) -> list[list[int]]:
    """Sample every step of `logits` (each (len(rows), vocab)) for `reqs`; the tokens of each."""
    tokens: list[list[int]] = [[] for _ in reqs]
    for step in logits:
        for i, t in enumerate(sampler.sample(step[rows].copy(), reqs)):
            tokens[i].append(int(t))
            reqs[i].tokens.append(int(t))
    return tokens


def test_same_seed_same_tokens_and_forget_restarts_the_generator() -> None:
    rng = np.random.default_rng(5)
    steps = [logits_of(rng, 1, 500, 1.0) for _ in range(30)]
    params = SamplingParams(seed=42, top_k=0, top_p=0.95)

    def tokens(sampler: Sampler, seed: int | None = 42) -> list[int]:
        return run_steps(sampler, [Req(1, replace(params, seed=seed))], steps, [0])[0]

    first = tokens(Sampler(500))
    assert first == tokens(Sampler(500))
    assert first != tokens(Sampler(500), seed=43)
    assert tokens(Sampler(500), seed=None) != tokens(Sampler(500), seed=None)
    assert len(set(tokens(Sampler(500), seed=-1))) > 1  # Ollama's -1: a random seed
    sampler = Sampler(500)
    tokens(sampler)
    assert tokens(sampler) != first  # the generator went on
    sampler.forget(1)
    assert tokens(sampler) == first


def test_a_row_alone_equals_the_same_row_in_a_batch_of_8() -> None:
    rng = np.random.default_rng(6)
    vocab = 3000
    steps = [logits_of(rng, 8, vocab, 2.5) for _ in range(25)]
    row = SamplingParams(seed=11, top_k=60, top_p=0.9, min_p=0.02, repeat_penalty=1.2)
    others = [
        SamplingParams(seed=s, top_k=k, top_p=p, temperature=t)
        for s, k, p, t in [
            (1, 5, 0.5, 1.0),
            (2, 200, 1.0, 0.7),
            (3, 0, 0.9, 1.0),
            (4, 1, 1, 1),
            (5, 0, 1.0, 2.0),
            (6, 10, 0.2, 0.0),
            (7, 1000, 0.99, 1.5),
        ]
    ]
    alone = run_steps(Sampler(vocab), [Req(0, row, [1, 2, 3])], steps, [3])[0]
    batch = [Req(i, p) for i, p in enumerate(others, start=1)]
    batch.insert(3, Req(0, row, [1, 2, 3]))
    together = run_steps(Sampler(vocab), batch, steps, list(range(8)))
    assert together[3] == alone
    assert len(set(alone)) > 3  # it really sampled


def test_a_mixed_batch_gives_each_row_what_it_gets_alone() -> None:
    rng = np.random.default_rng(7)
    vocab = 4096
    steps = [logits_of(rng, 10, vocab, scale) for scale in (0.3, 1.0, 3.0, 6.0) * 4]
    params = [
        SamplingParams(temperature=0),  # greedy, with penalties
        SamplingParams(top_k=1, seed=1),  # greedy too
        SamplingParams(seed=2),  # Ollama's defaults
        SamplingParams(seed=3, top_k=5, top_p=0.5, temperature=1.2, frequency_penalty=0.5),
        SamplingParams(seed=4, top_k=300, min_p=0.1, repeat_last_n=-1),
        SamplingParams(seed=5, top_k=0, top_p=0.9),  # nucleus
        SamplingParams(seed=6, top_k=0, top_p=1.0, min_p=0.05, presence_penalty=1.0),  # flat
        SamplingParams(seed=7, top_k=0, typical_p=0.8),  # typical over the vocab
        SamplingParams(seed=8, top_k=100, typical_p=0.5, top_p=0.8),
        SamplingParams(seed=9, top_k=vocab + 5, top_p=0.6),  # top_k above the vocab: off
    ]
    history = rng.integers(0, vocab, 40).tolist()
    batch = run_steps(
        Sampler(vocab),
        [Req(i, p, list(history)) for i, p in enumerate(params)],
        steps,
        list(range(10)),
    )
    for i, p in enumerate(params):
        alone = run_steps(Sampler(vocab), [Req(i, p, list(history))], steps, [i])[0]
        assert batch[i] == alone, f"row {i}"


# --- input checks and SamplingParams ----------------------------------------------------------


def test_sample_checks_its_input() -> None:
    sampler = Sampler(10)
    assert sampler.sample(np.zeros((0, 10), dtype=np.float32), []).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(np.zeros((2, 10), dtype=np.float32), [Req(0, GREEDY)])
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(np.zeros((1, 11), dtype=np.float32), [Req(0, GREEDY)])
    with pytest.raises(ValueError, match="float32"):
        sampler.sample(np.zeros((1, 10)), [Req(0, GREEDY)])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Sampler(0)
    sampler.forget(12345)  # unknown ids are fine


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"min_p": 2.0}, "min_p"),
        ({"typical_p": 0.0}, "typical_p"),
        ({"typical_p": 1.1}, "typical_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"repeat_last_n": -2}, "repeat_last_n"),
        ({"num_predict": -3}, "num_predict"),
        ({"stop": ("ok", "")}, "stop"),
    ],
)
def test_invalid_params_are_an_invalid_request(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        SamplingParams(**options)  # type: ignore[arg-type]
    assert raised.value.status == 400


def test_defaults_are_ollamas() -> None:
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.typical_p) == (0.8, 40, 0.9, 0.0, 1.0)
    assert (p.repeat_penalty, p.repeat_last_n, p.seed, p.num_predict) == (1.0, 64, None, -1)
    assert not p.greedy
    assert SamplingParams(temperature=0).greedy and SamplingParams(top_k=1).greedy


def test_from_options_takes_the_sampling_options_and_ignores_the_rest() -> None:
    p = SamplingParams.from_options(
        {
            "temperature": 0.2,
            "top_k": 7,
            "seed": 3,
            "num_ctx": 4096,
            "mirostat": 1,
            "min_p": None,
            "stop": "\n\n",
            "num_predict": 12,
        }
    )
    assert (p.temperature, p.top_k, p.seed, p.num_predict) == (0.2, 7, 3, 12)
    assert p.min_p == 0.0 and p.stop == ("\n\n",)
    assert SamplingParams.from_options({"stop": ["a", "b"]}).stop == ("a", "b")
    assert SamplingParams.from_options({}) == SamplingParams()
    with pytest.raises(InvalidRequest):
        SamplingParams.from_options({"top_p": 3.0})


class CountingAllowed(AllowedTokens):
    def __init__(self, allowed: set[int]) -> None:
        super().__init__(allowed)
        self.masks = 0

    def mask(self, logits: np.ndarray) -> None:
        self.masks += 1
        super().mask(logits)


@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 1.0, "top_k": 0}, {}])
def test_a_constraint_admits_only_its_tokens_and_learns_each_one(options: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    sampler = Sampler(64)
    allowed = CountingAllowed({3, 17, 40})
    free = Req(1, SamplingParams(**options, seed=1))
    held = Req(2, SamplingParams(**options, seed=2), constraint=allowed)
    for _ in range(20):
        logits = logits_of(rng, 2, 64)
        logits[1, 17] = -50.0  # never the model's choice: only the constraint can pick it
        out = sampler.sample(logits, [free, held])
        assert out[1] in {3, 40}
    assert len(allowed.accepted) == 20 and set(allowed.accepted) <= {3, 40}
    assert 0 < allowed.masks <= 20


def test_a_token_the_constraint_allows_is_kept_without_masking() -> None:
    sampler = Sampler(8)
    allowed = CountingAllowed({5})
    req = Req(1, GREEDY, constraint=allowed)
    logits = np.zeros((1, 8), dtype=np.float32)
    logits[0, 5] = 3.0
    assert sampler.sample(logits, [req])[0] == 5 and allowed.masks == 0
    assert allowed.accepted == [5]


def test_logprobs_are_the_log_softmax_the_draw_saw_with_the_best_alternatives() -> None:
    rng = np.random.default_rng(7)
    sampler = Sampler(50)
    asking = Req(1, SamplingParams(temperature=0, repeat_penalty=1.0, logprobs=3))
    quiet = Req(2, GREEDY)
    logits = logits_of(rng, 2, 50)
    expected = logits[0] - np.log(np.exp(logits[0].astype(np.float64)).sum())
    out = sampler.sample(logits.copy(), [asking, quiet])
    token, logprob, best = sampler.take_logprobs(1) or (None, None, [])
    assert token == out[0] and logprob == pytest.approx(expected[out[0]], abs=1e-5)
    assert [t for t, _ in best] == list(np.argsort(expected)[::-1][:3])
    assert best[0] == (token, pytest.approx(logprob))  # greedy: the best is the one drawn
    assert sampler.take_logprobs(1) is None and sampler.take_logprobs(2) is None
