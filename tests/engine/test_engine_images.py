"""Images in the engine, on the fake backend: an image's rows decoded in a call of their own
beside the batched token rows, keyed by its pixels in the prefix cache, exact under preemption."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from olla.backends.fake import FakeBackend
from olla.engine.engine import Engine
from olla.engine.images import ImageSpan, placeholder_ids, position_gap
from olla.engine.sequence import NewSequence
from tests.engine.test_engine_fake import GREEDY, PROMPTS, Greedy, drain, fake, make, solo

WIDTH = 8


def image(seed: int, num_tokens: int = 40) -> ImageSpan:
    """An image of `num_tokens` rows whose embeddings follow from `seed` (its 'pixels')."""
    rows = np.random.default_rng(seed).standard_normal((num_tokens, WIDTH)).astype(np.float32)
    key = hashlib.blake2b(rows.tobytes(), digest_size=16).digest()
    return ImageSpan(0, num_tokens, num_tokens, key, rows)


def with_image(before: list[int], span: ImageSpan, after: list[int]) -> NewSequence:
    """A prompt: tokens, the image, tokens."""
    placed = span.moved(len(before))
    ids = [*before, *placeholder_ids(span.key, span.num_tokens), *after]
    return NewSequence(ids, GREEDY, 12, images=(placed,))


def answer(engine: Engine, new: NewSequence) -> tuple[list[int], int]:
    """The sequence's tokens and its prompt tokens the prefix cache supplied."""
    seq_id = engine.add(new)
    tokens: list[int] = []
    cached = 0
    for out in drain(engine):
        if out.seq_id == seq_id:
            tokens += out.token_ids
            if out.finished:
                cached = out.num_cached_tokens
    return tokens, cached


BEFORE, AFTER = (PROMPTS[0] * 4)[:20], (PROMPTS[1] * 4)[:9]


def test_an_images_rows_are_decoded_and_its_answer_follows_its_pixels() -> None:
    engine = make()
    first, cached = answer(engine, with_image(BEFORE, image(1), AFTER))
    assert len(first) == 12 and cached == 0
    assert fake(engine).num_image_rows == 40
    other, _ = answer(make(), with_image(BEFORE, image(2), AFTER))
    assert other != first  # another image: another answer


def test_the_same_image_again_is_a_prefix_hit_with_the_same_answer() -> None:
    engine = make()
    first, _ = answer(engine, with_image(BEFORE, image(1), AFTER))
    again, cached = answer(engine, with_image(BEFORE, image(1), AFTER))
    assert again == first
    # every full block short of the last token's: the image's too, so it is not decoded again
    assert cached == (20 + 40 + 9 - 1) // 16 * 16
    assert fake(engine).num_image_rows == 40 + max(0, 20 + 40 - cached) == 40


def test_a_different_image_never_matches_the_cached_one() -> None:
    engine = make()
    answer(engine, with_image(BEFORE, image(1), AFTER))
    _, cached = answer(engine, with_image(BEFORE, image(2), AFTER))
    assert cached == 16  # the text before it only (20 tokens: one full block)


def test_a_hit_that_ends_inside_an_image_decodes_the_rest_of_it() -> None:
    engine = make()
    answer(engine, with_image(BEFORE, image(1), [*AFTER, 5, 6, 7, 8, 9, 10, 11, 12]))
    alone, _ = answer(make(), with_image(BEFORE, image(1), [7, 7]))
    tokens, cached = answer(engine, with_image(BEFORE, image(1), [7, 7]))
    assert tokens == alone
    assert len(BEFORE) < cached < 60  # the hit ends inside the image (cells 20 to 59)


def test_text_streams_beside_an_image_keep_their_tokens() -> None:
    reference = solo(PROMPTS[:4])
    engine = make()
    texts = [engine.add(NewSequence(p, GREEDY, 20)) for p in PROMPTS[:4]]
    for _ in range(3):  # the streams are decoding when the image comes
        engine.step()
    seq = engine.add(with_image(BEFORE, image(3), AFTER))
    tokens: dict[int, list[int]] = {i: [] for i in [*texts, seq]}
    for out in drain(engine):
        tokens[out.seq_id] += out.token_ids
    assert [tokens[i] for i in texts] == [
        r[len(r) - len(tokens[i]) :] for r, i in zip(reference, texts, strict=True)
    ]
    alone, _ = answer(make(), with_image(BEFORE, image(3), AFTER))
    assert tokens[seq] == alone


def test_streams_are_stepped_in_the_step_that_decodes_an_image() -> None:
    engine = make(max_prefill_seqs=1)
    text = engine.add(NewSequence(PROMPTS[2], GREEDY, 30))
    while not engine.step():
        pass  # its first token
    engine.add(with_image([], image(4), AFTER))
    got_token = []
    for _ in range(6):
        outputs = engine.step()
        got_token.append(any(o.seq_id == text and o.token_ids for o in outputs))
    assert all(got_token)  # no step of the image's left the stream without its token


def test_an_image_that_ends_the_prompt_gets_its_first_token_from_the_images_logits() -> None:
    engine = make()
    tokens, _ = answer(engine, with_image(BEFORE, image(5), []))
    assert len(tokens) == 12


def test_preempted_sequences_with_images_recompute_to_the_same_answer() -> None:
    prompts = [with_image(PROMPTS[i][:10], image(10 + i), PROMPTS[i + 1][:6]) for i in range(4)]
    alone = [answer(make(), p)[0] for p in prompts]
    engine = Engine(
        FakeBackend(num_cells=256, num_slots=4, usable_cells=200),
        Greedy(),
        block_size=16,
        max_num_seqs=4,
        max_batch_tokens=64,
    )
    ids = [engine.add(p) for p in prompts]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    for out in drain(engine):
        tokens[out.seq_id] += out.token_ids
    assert [tokens[i] for i in ids] == alone
    assert engine.scheduler.num_preemptions > 0


def test_a_sequence_with_an_image_does_not_shift() -> None:
    engine = make(max_model_len=96)
    seq_id = engine.add(
        NewSequence(
            [*BEFORE, *placeholder_ids(image(1).key, 40)],
            GREEDY,
            500,
            shift=True,
            images=(image(1).moved(20),),
        )
    )
    outputs = drain(engine)
    last = [o for o in outputs if o.seq_id == seq_id][-1]
    assert last.done_reason == "length" and last.num_completion_tokens == 96 - 60


def test_m_rope_positions_leave_gaps_and_the_prefix_cache_stops_at_the_first_image() -> None:
    span = image(1)
    base = np.zeros((4, 40), np.int32)
    base[1], base[2] = np.arange(40) % 8, np.arange(40) // 8  # a grid of 8 x 5
    mrope = ImageSpan(20, 40, 8, span.key, span.embeddings, base, np.ones((4, 40), np.int32))
    assert position_gap((mrope,), 60) == 32 and position_gap((mrope,), 59) == 0
    positions = mrope.positions(20, 0).reshape(4, 40)
    assert (positions[0] == 20).all() and positions[1, 9] == 21 and positions[2, 9] == 21
    engine = make()
    new = NewSequence([*BEFORE, *placeholder_ids(span.key, 40), *AFTER], GREEDY, 4, images=(mrope,))
    engine.add(new)
    seq = engine.scheduler.waiting[0]
    assert seq.prefix_limit == 20


@pytest.mark.parametrize("start", [0, 16])
def test_a_prompt_chunk_stops_where_an_image_starts(start: int) -> None:
    engine = make(max_batch_tokens=256)
    engine.add(with_image(PROMPTS[3][: start + 5], image(6), AFTER))
    batch = engine.scheduler.schedule()
    assert [(i.start, i.count, i.image is None) for i in batch.items] == [(0, start + 5, True)]
