"""Engine, scheduler and block manager on the deterministic fake backend."""

from __future__ import annotations

import random

import pytest

from olla.backends.fake import FakeBackend
from olla.engine.detokenizer import Detokenizer
from olla.engine.engine import Engine, StepOutput
from olla.engine.sampling import Sampler, SamplingParams
from olla.errors import InvalidRequest

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)
RNG = random.Random(42)
PROMPTS = [[RNG.randrange(3, 60) for _ in range(RNG.randrange(5, 70))] for _ in range(16)]
SYSTEM = [RNG.randrange(3, 60) for _ in range(48)]  # a shared prefix of 3 full blocks


def make(
    num_cells: int = 2048, num_slots: int = 16, usable_cells: int | None = None, **kwargs: object
) -> Engine:
    backend = FakeBackend(num_cells=num_cells, num_slots=num_slots, usable_cells=usable_cells)
    params = {"block_size": 16, "max_num_seqs": 8, "max_batch_tokens": 256, **kwargs}
    return Engine(backend, Sampler(backend.vocab_size), **params)  # type: ignore[arg-type]


def run(engine: Engine, prompts: list[list[int]], max_tokens: int = 20) -> list[list[int]]:
    """Add every prompt, step until all finish; each sequence's tokens, in prompt order."""
    ids = [engine.add(p, GREEDY, max_tokens) for p in prompts]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    for _ in range(10_000):
        if not engine.has_work:
            break
        for out in engine.step():
            tokens[out.seq_id] += out.token_ids
    assert not engine.has_work, "the engine did not finish"
    return [tokens[i] for i in ids]


def assert_all_free(engine: Engine) -> None:
    bm = engine.block_manager
    assert bm.num_free_blocks + bm.num_evictable_blocks == bm.num_blocks  # cached ones may stay
    assert not engine.scheduler.running and not engine.scheduler.waiting


def test_one_prompt_alone_equals_it_inside_a_batch_of_8() -> None:
    alone = run(make(), PROMPTS[:1])[0]
    together = run(make(), PROMPTS[:8])
    assert together[0] == alone
    assert len(alone) == 20


def test_prefix_cache_on_and_off_give_the_same_output_and_hits_are_counted() -> None:
    prompts = [SYSTEM + p for p in PROMPTS[:6]]
    on, off = make(), make(enable_prefix_cache=False)
    first_on = run(on, prompts[:1])
    assert run(on, prompts[1:]) == run(off, prompts[1:])
    assert first_on == run(off, prompts[:1])
    assert on.block_manager.num_prefix_hit_tokens >= 5 * len(SYSTEM)  # later prompts hit it
    assert off.block_manager.num_prefix_hit_tokens == 0
    assert_all_free(on)
    assert_all_free(off)


def test_a_repeated_prompt_is_served_from_the_cache() -> None:
    engine = make()
    first = run(engine, [SYSTEM + PROMPTS[0]])
    decoded = engine.backend.num_decoded_tokens  # type: ignore[attr-defined]
    assert run(engine, [SYSTEM + PROMPTS[0]]) == first
    recomputed = engine.backend.num_decoded_tokens - decoded  # type: ignore[attr-defined]
    assert recomputed < len(SYSTEM)  # the shared blocks were copied, not recomputed


def test_forced_preemption_gives_the_same_output() -> None:
    roomy = run(make(), PROMPTS[:8], max_tokens=40)
    tight = make(num_cells=384)  # 24 blocks for 8 sequences growing to ~110 tokens each
    assert run(tight, PROMPTS[:8], max_tokens=40) == roomy
    assert tight.scheduler.num_preemptions > 0
    assert_all_free(tight)


def test_backend_with_less_room_than_it_claims_is_handled_by_preemption() -> None:
    roomy = run(make(), PROMPTS[:4], max_tokens=30)
    engine = make(usable_cells=300)
    assert run(engine, PROMPTS[:4], max_tokens=30) == roomy


def test_sixteen_streams_finish_and_every_block_comes_back() -> None:
    engine = make(max_num_seqs=16)
    outputs = run(engine, PROMPTS, max_tokens=25)
    assert all(len(o) == 25 for o in outputs)
    assert_all_free(engine)
    cached = engine.block_manager.num_cached_blocks
    assert engine.backend.num_used_cells <= cached * 16  # type: ignore[attr-defined]


def test_cancel_mid_stream_frees_blocks_in_the_same_step() -> None:
    engine = make()
    ids = [engine.add(p, GREEDY, 100) for p in PROMPTS[:4]]
    for _ in range(5):
        engine.step()
    for seq_id in ids:
        engine.abort(seq_id)
    assert not engine.has_work
    engine.step()  # applies the cache removals
    assert_all_free(engine)


def test_waiting_sequences_are_admitted_when_blocks_come_back() -> None:
    engine = make(num_cells=160, max_num_seqs=8)  # 10 blocks: one 130-token prompt at a time
    prompts = [[7] * 120, [9] * 120]
    first, second = (engine.add(p, GREEDY, 10) for p in prompts)
    engine.step()
    assert [s.seq_id for s in engine.scheduler.running] == [first]
    assert [s.seq_id for s in engine.scheduler.waiting] == [second]
    done: set[int] = set()
    while engine.has_work:
        done |= {o.seq_id for o in engine.step() if o.finished}
    assert done == {first, second}


def test_stop_strings_end_the_sequence_and_are_not_emitted() -> None:
    engine = make()
    tokens = run(engine, PROMPTS[:1], max_tokens=20)[0]
    stop = f"<{tokens[3]}>"
    engine = make()
    seq_id = engine.add(PROMPTS[0], SamplingParams(temperature=0, stop=(stop,)), 20)
    outputs: list[StepOutput] = []
    while engine.has_work:
        outputs += engine.step()
    text = "".join(o.text for o in outputs)
    assert stop not in text and outputs[-1].done_reason == "stop"
    assert (
        text
        == "".join(f"<{t}>" if t not in (1, 2) else "" for t in tokens[: tokens.index(tokens[3])])[
            : len(text)
        ]
    )
    assert outputs[-1].seq_id == seq_id


def test_a_backend_failure_fails_that_batch_and_the_engine_goes_on() -> None:
    engine = make()
    engine.backend.fail_at_step = 3  # type: ignore[attr-defined]
    ids = [engine.add(p, GREEDY, 10) for p in PROMPTS[:3]]
    failed: list[StepOutput] = []
    while engine.has_work:
        failed += [o for o in engine.step() if o.finished]
    assert sorted(o.seq_id for o in failed) == ids
    assert {o.done_reason for o in failed} == {"error"}
    assert_all_free(engine)
    assert len(run(engine, PROMPTS[:1], max_tokens=5)[0]) == 5


def test_a_prompt_longer_than_the_context_is_refused() -> None:
    engine = make(num_cells=256)
    with pytest.raises(InvalidRequest, match="the context holds 256"):
        engine.add([4] * 300, GREEDY, 10)


def test_detokenizer_never_splits_a_character_and_holds_back_stop_prefixes() -> None:
    pieces = {1: "€".encode()[:2], 2: "€".encode()[2:], 3: b"ab", 4: b"<E", 5: b"ND>", 6: b"<x"}
    detok = Detokenizer(pieces.__getitem__, ["<END>"])
    assert detok.add(3) == "ab"
    assert detok.add(1) == ""  # half a character
    assert detok.add(2) == "€"
    assert detok.add(4) == ""  # may be the start of <END>
    assert detok.add(5) == "" and detok.stopped
    other = Detokenizer(pieces.__getitem__, ["<END>"])
    assert other.add(4) == "" and other.finish() == "<E"  # held back, released at the end
    assert Detokenizer(pieces.__getitem__, ["<END>"]).add(6) == "<x"  # cannot begin <END>


def test_detokenizer_against_a_naive_reference() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", "é", "€", "<", ">", "S", "T"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        data = text.encode()
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 8))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        stop = rng.choice(["<S>", "TT", "é<"])
        detok = Detokenizer(pieces.__getitem__, [stop])
        released = "".join(detok.add(i) for i in range(len(pieces))) + detok.finish()
        expected = text.split(stop)[0]
        assert released == expected, (text, stop)


def test_rows_drawn_on_the_device_give_the_host_samplers_tokens() -> None:
    """Plain greedy rows go to the backend's device sampler (the fake leaves NaN logits for
    them); seeded, penalised and grammar-free host rows in the same batches are unchanged."""
    asks = [
        GREEDY,
        SamplingParams(temperature=0.9, seed=7, repeat_penalty=1.0),
        SamplingParams(temperature=0),
        GREEDY,
    ]
    outputs = []
    for device in (False, True):
        backend = FakeBackend(num_cells=1024, num_slots=8, device_sampling=device)
        engine = Engine(backend, Sampler(backend.vocab_size), block_size=16, max_num_seqs=4)
        ids = [engine.add(p, s, 30) for p, s in zip(PROMPTS, asks, strict=False)]
        tokens: dict[int, list[int]] = {i: [] for i in ids}
        while engine.has_work:
            for out in engine.step():
                tokens[out.seq_id] += out.token_ids
        outputs.append([tokens[i] for i in ids])
        assert backend.num_device_sampled == (2 * 30 if device else 0)
    assert outputs[0] == outputs[1]
