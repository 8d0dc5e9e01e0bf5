"""Engine end to end on the fake backend: batching, prefix cache, preemption, cancel, faults."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from olla.backends.fake import FakeBackend
from olla.engine.engine import Engine, StepOutput
from olla.engine.sampling import Sampler, SamplingParams
from olla.engine.sequence import NewSequence, Sequence
from olla.errors import InvalidRequest

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)
RNG = random.Random(42)
PROMPTS = [[RNG.randrange(3, 60) for _ in range(RNG.randrange(5, 70))] for _ in range(16)]
SYSTEM = [RNG.randrange(3, 60) for _ in range(48)]  # a shared prefix of 3 full blocks


class Greedy:
    """The most likely token of each row; remembers which sequences it was told to forget."""

    def __init__(self) -> None:
        self.forgotten: list[int] = []

    def sample(self, logits: npt.NDArray[np.float32], seqs: list[Sequence]) -> npt.NDArray[Any]:
        assert len(logits) == len(seqs)
        return logits.argmax(axis=1)

    def forget(self, seq_id: int) -> None:
        self.forgotten.append(seq_id)


def make(
    num_cells: int = 2048, num_slots: int = 16, backend: dict[str, Any] | None = None, **kwargs: Any
) -> Engine:
    fake = FakeBackend(num_cells=num_cells, num_slots=num_slots, **(backend or {}))
    params = {"block_size": 16, "max_num_seqs": 8, "max_batch_tokens": 256, **kwargs}
    return Engine(fake, Greedy(), **params)


def fake(engine: Engine) -> FakeBackend:
    assert isinstance(engine.backend, FakeBackend)
    return engine.backend


def drain(engine: Engine, max_steps: int = 10_000) -> list[StepOutput]:
    """Step until no work is left, checking the block manager's invariants after each step."""
    outputs: list[StepOutput] = []
    for _ in range(max_steps):
        if not engine.has_work:
            return outputs
        outputs += engine.step()
        engine.block_manager.check()
    raise AssertionError("the engine did not finish")


def run(
    engine: Engine, prompts: list[list[int]], max_tokens: int = 20, params: SamplingParams = GREEDY
) -> list[list[int]]:
    """Add every prompt, step until all finish; each sequence's tokens, in prompt order."""
    ids = [engine.add(NewSequence(p, params, max_tokens)) for p in prompts]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    for out in drain(engine):
        tokens[out.seq_id] += out.token_ids
    return [tokens[i] for i in ids]


def solo(prompts: list[list[int]], max_tokens: int = 20, **backend: Any) -> list[list[int]]:
    """Each prompt alone on a fresh engine: the reference every batching must reproduce."""
    return [run(make(backend=backend), [p], max_tokens)[0] for p in prompts]


def assert_back_to_start(engine: Engine) -> None:
    """No sequence left, no ref held; the backend holds exactly the cached blocks' cells."""
    bm = engine.block_manager
    bm.check()
    assert not engine.has_work
    assert bm.num_used_blocks == 0
    assert bm.num_free_blocks + bm.num_evictable_blocks == bm.num_blocks
    backend = fake(engine)
    if backend.kv_unified:  # one cell per cached block position, shared by its holders
        assert backend.num_used_cells == bm.num_evictable_blocks * bm.block_size
    for slot in range(backend.num_slots):  # each slot holds its cached chain, nothing else
        assert len(backend.slot_tokens(slot)) == bm.num_held_blocks(slot) * bm.block_size


def test_one_prompt_alone_equals_it_inside_a_batch_of_8() -> None:
    alone = run(make(), PROMPTS[:1])[0]
    together = run(make(), PROMPTS[:8])
    assert len(alone) == 20
    assert together[0] == alone
    assert together == solo(PROMPTS[:8])
    assert len({tuple(t) for t in together}) == 8  # different prompts, different answers


@pytest.mark.parametrize("unified", [True, False], ids=["unified", "per-slot"])
def test_prefix_cache_on_and_off_give_the_same_output_and_hits_are_counted(unified: bool) -> None:
    prompts = [SYSTEM + p for p in PROMPTS[:6]]
    layout = {"num_cells": 4096, "backend": {"kv_unified": unified}}  # 256 cells a slot
    on, off = make(**layout), make(enable_prefix_cache=False, **layout)  # type: ignore[arg-type]
    assert run(on, prompts[:1]) == run(off, prompts[:1])
    decoded_on, decoded_off = fake(on).num_decoded_tokens, fake(off).num_decoded_tokens
    assert run(on, prompts[1:]) == run(off, prompts[1:])
    assert on.block_manager.num_prefix_hit_tokens >= 5 * len(SYSTEM)
    assert off.block_manager.num_prefix_hit_tokens == 0
    saved = fake(off).num_decoded_tokens - decoded_off - (fake(on).num_decoded_tokens - decoded_on)
    assert saved >= 5 * len(SYSTEM)  # the shared blocks were copied, not computed again
    assert on.stats()["prefix_hit_rate"] > 0
    assert_back_to_start(on)
    assert_back_to_start(off)


def test_a_follow_up_turn_hits_the_blocks_of_its_own_history() -> None:
    engine = make()
    prompt = PROMPTS[0] + PROMPTS[1]
    answer = run(engine, [prompt], max_tokens=30)[0]
    engine.add(NewSequence(prompt + answer + [5, 6, 7], GREEDY, 5))
    outputs = drain(engine)
    computed = len(prompt) + len(answer) - 1  # the last sampled token was never fed
    assert outputs[-1].num_cached_tokens == computed // 16 * 16
    assert outputs[-1].num_prompt_tokens == len(prompt) + len(answer) + 3


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_forced_preemption_gives_the_same_output(prefix_cache: bool) -> None:
    reference = solo(PROMPTS[:8], max_tokens=40)
    tight = make(num_cells=384, enable_prefix_cache=prefix_cache)  # 24 blocks for ~8x110 tokens
    assert run(tight, PROMPTS[:8], max_tokens=40) == reference
    assert tight.scheduler.num_preemptions > 0
    assert_back_to_start(tight)


def test_sixteen_concurrent_sequences_finish_and_every_block_comes_back() -> None:
    engine = make(max_num_seqs=16, max_prefill_seqs=4)
    free_at_start = engine.block_manager.num_free_blocks
    outputs = run(engine, PROMPTS, max_tokens=25)
    assert outputs == solo(PROMPTS, max_tokens=25)
    assert_back_to_start(engine)
    bm = engine.block_manager
    assert bm.num_free_blocks + bm.num_evictable_blocks == free_at_start


def test_cancel_mid_stream_returns_every_block_at_once() -> None:
    engine = make()
    ids = [engine.add(NewSequence(p, GREEDY, 100)) for p in PROMPTS[:4]]
    for _ in range(6):
        engine.step()
    aborted = engine.abort(ids[0])
    assert aborted is not None and aborted.finished and aborted.done_reason == "cancelled"
    assert engine.abort(ids[0]) is None  # already gone
    assert ids[0] in engine.sampler.forgotten  # type: ignore[attr-defined]
    for seq_id in ids[1:]:
        engine.abort(seq_id)
    assert_back_to_start(engine)  # no step needed: the cells went with the abort
    assert run(engine, PROMPTS[:1]) == solo(PROMPTS[:1])


def test_cancel_leaves_the_other_streams_unchanged() -> None:
    engine = make()
    ids = [engine.add(NewSequence(p, GREEDY, 30)) for p in PROMPTS[:4]]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    for _ in range(8):
        for out in engine.step():
            tokens[out.seq_id] += out.token_ids
    engine.abort(ids[1])
    for out in drain(engine):
        tokens[out.seq_id] += out.token_ids
    expected = solo(PROMPTS[:4], max_tokens=30)
    assert [tokens[i] for i in ids if i != ids[1]] == [expected[0], *expected[2:]]
    assert_back_to_start(engine)


def test_kv_cache_full_from_decode_loses_no_token() -> None:
    reference = solo(PROMPTS[:6], max_tokens=30)
    engine = make(backend={"usable_cells": 300})  # the backend has less room than it claims
    assert run(engine, PROMPTS[:6], max_tokens=30) == reference
    assert engine.num_kv_cache_full > 0
    assert engine.block_manager.num_used_blocks == 0
    assert run(engine, PROMPTS[6:9], max_tokens=30) == solo(PROMPTS[6:9], max_tokens=30)


def test_a_sequence_that_cannot_fit_the_real_cache_fails_alone() -> None:
    engine = make(backend={"usable_cells": 40})
    engine.add(NewSequence([5] * 60, GREEDY, 10))
    outputs = drain(engine)
    assert [(o.done_reason, bool(o.error)) for o in outputs] == [("error", True)]
    assert run(engine, [[5] * 10], max_tokens=5) == solo([[5] * 10], max_tokens=5)


def test_an_injected_backend_failure_fails_that_batch_and_the_engine_goes_on() -> None:
    engine = make(max_num_seqs=3, backend={"fail_at_step": 3})
    ids = [engine.add(NewSequence(p, GREEDY, 10)) for p in PROMPTS[:4]]
    outputs = drain(engine)
    failed = [o for o in outputs if o.finished and o.done_reason == "error"]
    assert sorted(o.seq_id for o in failed) == ids[:3]  # the three in the failed batch
    assert all("injected" in o.error for o in failed)
    last = [o for o in outputs if o.seq_id == ids[3]]
    assert [t for o in last for t in o.token_ids] == solo(PROMPTS[3:4], max_tokens=10)[0]
    assert_back_to_start(engine)
    assert run(engine, PROMPTS[:1], max_tokens=5) == solo(PROMPTS[:1], max_tokens=5)


def test_end_of_generation_finishes_early_with_the_same_tokens_as_alone() -> None:
    backend = {"eog_every": 6}
    outputs = run(make(backend=backend), PROMPTS[:8], max_tokens=40)
    assert outputs == solo(PROMPTS[:8], max_tokens=40, **backend)
    assert any(len(o) < 40 and o[-1] == 0 for o in outputs)


def test_streamed_text_is_the_tokens_text_and_stops_before_a_stop_string() -> None:
    engine = make()
    tokens = run(engine, PROMPTS[:1], max_tokens=20)[0]
    pieces = b"".join(fake(engine).token_bytes(t) for t in tokens)
    engine.add(NewSequence(PROMPTS[0], GREEDY, 20))
    assert "".join(o.text for o in drain(engine)) == pieces.decode("utf-8", errors="replace")
    stop = f"<{tokens[3]}>"
    engine.add(
        NewSequence(PROMPTS[0], SamplingParams(temperature=0, repeat_penalty=1.0, stop=(stop,)), 20)
    )
    outputs = drain(engine)
    text = "".join(o.text for o in outputs)
    assert text == pieces.decode("utf-8", errors="replace").split(stop)[0]
    assert outputs[-1].finished and outputs[-1].done_reason == "stop"


def test_a_long_prompt_is_prefilled_in_chunks_beside_a_running_stream() -> None:
    engine = make(max_batch_tokens=32)
    streaming = engine.add(NewSequence(PROMPTS[0][:8], GREEDY, 50))
    while not any(o.seq_id == streaming for o in engine.step()):
        pass
    long = engine.add(
        NewSequence([5] * 300, GREEDY, 5)
    )  # 31 tokens of prefill a step beside the stream
    for _ in range(9):
        assert [o.seq_id for o in engine.step() if o.token_ids] == [streaming]
    assert [o.seq_id for o in engine.step() if o.token_ids] == [streaming, long]


def test_prompts_that_do_not_fit_are_refused_and_budgets_are_capped() -> None:
    engine = make(num_cells=256)
    with pytest.raises(InvalidRequest, match="the context holds 256"):
        engine.add(NewSequence([4] * 256, GREEDY, 10))
    with pytest.raises(InvalidRequest, match="empty"):
        engine.add(NewSequence([], GREEDY, 10))
    engine.add(NewSequence([4] * 253, GREEDY, 10))
    outputs = drain(engine)
    assert outputs[-1].num_completion_tokens == 3 and outputs[-1].done_reason == "length"


def test_a_zero_budget_finishes_without_computing() -> None:
    engine = make()
    seq_id = engine.add(NewSequence(PROMPTS[0], GREEDY, 0))
    assert engine.has_work
    outputs = engine.step()
    assert [(o.seq_id, o.finished, o.token_ids) for o in outputs] == [(seq_id, True, [])]
    assert fake(engine).num_decodes == 0 and not engine.has_work


def test_counts_and_timings_add_up() -> None:
    ticks = itertools.count()
    backend = FakeBackend(num_cells=1024, num_slots=8)
    engine = Engine(backend, Greedy(), clock=lambda: next(ticks) * 1e-3)
    engine.add(NewSequence(SYSTEM + PROMPTS[0], GREEDY, 4))
    drain(engine)
    engine.add(NewSequence(SYSTEM + PROMPTS[1], GREEDY, 4))
    outputs = drain(engine)
    first, last = outputs[0], outputs[-1]
    assert first.prompt_eval_ns > 0 and first.eval_ns == 0
    assert last.finished and last.all_output_ids == [t for o in outputs for t in o.token_ids]
    assert (last.num_prompt_tokens, last.num_cached_tokens) == (len(SYSTEM + PROMPTS[1]), 48)
    assert last.num_completion_tokens == 4
    assert last.total_ns == last.queue_ns + last.prompt_eval_ns + last.eval_ns
    assert last.eval_ns > 0
    stats = engine.stats()
    assert stats["running"] == stats["waiting"] == 0 and stats["blocks_used"] == 0
    assert stats["prefix_hit_tokens"] == 48


def test_the_real_sampler_gives_the_same_seeded_tokens_alone_and_in_a_batch() -> None:
    params = SamplingParams(temperature=1.0, top_k=20, seed=7)

    def sampled(prompts: list[list[int]]) -> list[list[int]]:
        backend = FakeBackend(num_cells=2048, num_slots=16)
        engine = Engine(backend, Sampler(backend.vocab_size), max_num_seqs=8)
        return run(engine, prompts, max_tokens=15, params=params)

    assert sampled(PROMPTS[:8])[0] == sampled(PROMPTS[:1])[0]


def test_rows_drawn_on_the_device_give_the_host_samplers_tokens() -> None:
    """Plain greedy rows go to the backend's device sampler (the fake leaves NaN logits for
    them); seeded, penalised and grammar-free host rows in the same batches are unchanged."""
    asks = [
        GREEDY,
        SamplingParams(temperature=0.9, seed=7, repeat_penalty=1.0),
        SamplingParams(temperature=0, repeat_penalty=1.1),
        GREEDY,
    ]
    outputs = []
    for device in (False, True):
        backend = FakeBackend(num_cells=1024, num_slots=8, device_sampling=device)
        engine = Engine(backend, Sampler(backend.vocab_size), block_size=16, max_num_seqs=4)
        ids = [engine.add(NewSequence(p, s, 30)) for p, s in zip(PROMPTS, asks, strict=False)]
        tokens: dict[int, list[int]] = {i: [] for i in ids}
        for out in drain(engine):
            tokens[out.seq_id] += out.token_ids
        outputs.append([tokens[i] for i in ids])
        assert backend.num_device_sampled == (2 * 30 if device else 0)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("unified", [True, False], ids=["unified", "per-slot"])
@pytest.mark.parametrize("seed", range(4))
def test_random_traffic_matches_solo_runs(seed: int, unified: bool) -> None:
    """Shared prefixes, follow-up turns, cancels, a tight cache: every answer as if alone.

    Per slot, each of the 8 slots has room for a whole sequence, so nothing is preempted.
    """
    rng = random.Random(seed)
    backend = {"eog_every": 25}
    layout = (
        {"num_cells": 256, "num_slots": 12}
        if unified
        else {"num_cells": 8 * 256, "num_slots": 8, "backend": {**backend, "kv_unified": False}}
    )
    engine = make(
        max_num_seqs=8,
        max_batch_tokens=64,
        max_prefill_seqs=rng.choice([1, 2]),
        **{"backend": backend, **layout},
    )  # type: ignore[arg-type]
    prefixes = [SYSTEM[:n] for n in (0, 16, 20, 48)]
    requests: dict[int, tuple[list[int], int]] = {}
    tokens: dict[int, list[int]] = {}
    cancelled: set[int] = set()
    for _ in range(300):
        if rng.random() < 0.3 or not engine.has_work:
            prompt = rng.choice(prefixes) + [
                rng.randrange(3, 60) for _ in range(rng.randint(1, 40))
            ]
            if tokens and rng.random() < 0.3:  # a follow-up turn of a finished conversation
                done = rng.choice([i for i in tokens if i not in cancelled])
                prompt = (requests[done][0] + tokens[done])[-200:] + prompt[-3:]
            max_tokens = rng.randint(1, 40)
            seq_id = engine.add(NewSequence(prompt, GREEDY, max_tokens))
            requests[seq_id], tokens[seq_id] = (prompt, max_tokens), []
        if rng.random() < 0.03 and engine.scheduler.running:
            victim = rng.choice(engine.scheduler.running).seq_id
            engine.abort(victim)
            cancelled.add(victim)
        for out in engine.step():
            tokens[out.seq_id] += out.token_ids
        engine.block_manager.check()
    for out in drain(engine):
        tokens[out.seq_id] += out.token_ids
    assert_back_to_start(engine)
    assert engine.block_manager.num_prefix_hit_tokens > 0, engine.stats()
    assert (engine.scheduler.num_preemptions > 0) == unified, engine.stats()
    for seq_id, (prompt, max_tokens) in requests.items():
        if seq_id not in cancelled:
            assert tokens[seq_id] == solo([prompt], max_tokens, **backend)[0], seq_id


class _TimedBackend(FakeBackend):
    """A fake whose decode 'takes' 10 ms per step plus 1 ms per row, on a manual clock."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.now = 0.0
        self.step_costs: list[tuple[int, float]] = []  # (tokens in the batch, seconds)

    def decode(self, batch: Any) -> npt.NDArray[np.float32]:
        cost = 0.010 + 0.001 * len(batch)
        self.now += cost
        self.step_costs.append((len(batch), cost))
        return super().decode(batch)


def test_a_paced_long_prompt_keeps_running_streams_within_the_slowdown() -> None:
    from olla.engine.pacing import PrefillPacer

    backend = _TimedBackend(num_cells=2048, num_slots=8)
    engine = Engine(
        backend,
        Greedy(),
        block_size=16,
        max_num_seqs=4,
        max_batch_tokens=256,
        pacer=PrefillPacer(slowdown=2.0, burst=2.0, whole_seconds=0.0, min_chunk=1, smoothing=1.0),
        clock=lambda: backend.now,
    )
    streams = [engine.add(NewSequence(p[:8], GREEDY, 200)) for p in PROMPTS[:2]]
    for _ in range(6):  # both streams decoding, decode-only steps measured
        engine.step()
    long_prompt = engine.add(NewSequence(PROMPTS[2] * 4, GREEDY, 1))
    first = len(backend.step_costs)
    finished = set()
    for _ in range(500):
        finished |= {out.seq_id for out in engine.step() if out.finished}
        if long_prompt in finished:
            break
    assert long_prompt in finished and not finished & set(streams)
    # after the first mixed step (which measures a prompt token), every step with the long
    # prompt's chunk beside the two decode rows is at most 2x a decode-only step
    mixed = [cost for tokens, cost in backend.step_costs[first + 1 :] if tokens > 2]
    decode_only = 0.010 + 0.001 * 2
    assert len(mixed) >= 10 and max(mixed) <= 2.0 * decode_only + 1e-9


def test_rows_reach_the_backend_in_slot_order_and_running_slots_stay_low() -> None:
    engine = make(num_cells=16 * 256, backend={"kv_unified": False}, max_num_seqs=8)
    seen: list[list[int]] = []
    decode = fake(engine).decode

    def spy(batch: Any) -> npt.NDArray[np.float32]:
        seen.append(batch.slots.tolist())
        return decode(batch)

    fake(engine).decode = spy  # type: ignore[method-assign]
    ids = [engine.add(NewSequence(p, GREEDY, 10 + 7 * i)) for i, p in enumerate(PROMPTS[:8])]
    for _ in range(30):
        engine.step()
    engine.add(
        NewSequence(PROMPTS[8], GREEDY, 10)
    )  # arrives after the first one finished: takes slot 0
    drain(engine)
    assert all(slots == sorted(slots) for slots in seen)
    assert max(max(slots) for slots in seen) == 7  # never above the 8 streams' slots
    assert ids


def test_admission_is_round_robin_across_tenants_and_fcfs_within_each() -> None:
    backend = FakeBackend(vocab_size=64, num_cells=512, num_slots=1)
    engine = Engine(backend, Sampler(64), block_size=16, max_num_seqs=1, max_batch_tokens=64)
    params = SamplingParams(temperature=0, repeat_penalty=1.0)
    tenant_of = {}
    for tenant, count in (("flood", 5), ("alice", 2), ("bob", 1)):
        for i in range(count):
            seq_id = engine.add(NewSequence([3 + i, 4, 5], params, 2, tenant=tenant))
            tenant_of[seq_id] = f"{tenant}{i}"
    order = []
    while engine.has_work:
        for out in engine.step():
            if out.token_ids and tenant_of[out.seq_id] not in order:
                order.append(tenant_of[out.seq_id])
    # one slot: each admission is the next tenant in turn, oldest request first within a tenant
    assert order == ["flood0", "alice0", "bob0", "flood1", "alice1", "flood2", "flood3", "flood4"]


def test_a_flood_gives_a_slot_up_to_a_user_with_nothing_running() -> None:
    def run(with_bob: bool) -> tuple[dict[str, int], dict[str, int], dict[str, list[int]]]:
        backend = FakeBackend(vocab_size=64, num_cells=1024, num_slots=2)
        engine = Engine(backend, Sampler(64), block_size=16, max_num_seqs=2, max_batch_tokens=64)
        params = SamplingParams(temperature=0, repeat_penalty=1.0)
        names = {
            engine.add(NewSequence([3 + i, 4, 5], params, 12, tenant="flood")): f"flood{i}"
            for i in range(4)
        }
        outputs: dict[str, list[int]] = {}
        first: dict[str, int] = {}
        done: dict[str, int] = {}
        for step in itertools.count():
            if step == 3 and with_bob:  # both slots are the flood's by now
                names[engine.add(NewSequence([9, 9, 9], params, 4, tenant="bob"))] = "bob"
            if not engine.has_work:
                break
            for out in engine.step():
                name = names[out.seq_id]
                if out.token_ids:
                    first.setdefault(name, step)
                if out.finished:
                    done[name] = step
                outputs.setdefault(name, []).extend(out.token_ids)
        return first, done, outputs

    _, _, alone = run(with_bob=False)
    first, done, outputs = run(with_bob=True)
    # bob's first token came while the flood's first two were still running: one gave way
    assert first["bob"] < min(done["flood0"], done["flood1"])
    assert first["bob"] - 3 <= 2
    # the flood's sequence that gave its slot up was recomputed: its tokens are unchanged
    assert {k: v for k, v in outputs.items() if k != "bob"} == alone


def test_a_request_that_waits_past_the_queue_timeout_ends_without_running() -> None:
    now = [0.0]
    engine = make(max_num_seqs=1, queue_timeout=30.0, clock=lambda: now[0])
    running = engine.add(NewSequence(PROMPTS[0], GREEDY, 1000))
    engine.step()
    now[0] = 5.0
    waiting = engine.add(NewSequence(PROMPTS[1], GREEDY, 4))
    for _ in range(2):
        now[0] += 10.0  # 15 s, 25 s: within its 30 s
        assert [o.seq_id for o in engine.step()] == [running]
    now[0] += 10.0
    outputs = engine.step()  # 35 s
    assert [(o.seq_id, o.finished) for o in outputs] == [(waiting, True), (running, False)]
    expired = outputs[0]
    assert expired.done_reason == "queue_timeout" and expired.token_ids == []
    assert (expired.total_ns, expired.queue_ns, expired.num_completion_tokens) == (30e9, 0, 0)
    assert engine.stats()["waiting"] == 0 and engine.abort(waiting) is None
    engine.abort(running)
    assert_back_to_start(engine)
