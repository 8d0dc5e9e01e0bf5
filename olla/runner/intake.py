"""Request intake: a `Submit` or `Embed` checked against the model and made ready for the engine.

Everything here runs on the runner's event loop as a request arrives, so a bad request gets its
error before it costs the engine anything.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from olla.chat import coerce_parameters
from olla.engine.images import ImageSpan
from olla.engine.sampling import SamplingParams
from olla.engine.sequence import NewSequence
from olla.errors import InvalidRequest
from olla.runner.build import ModelHost
from olla.runner.direct import DirectStream
from olla.wire.lines import LineWriter
from olla.wire.messages import Embed, Submit

log = logging.getLogger(__name__)

_NUM_KEEP = 4  # Ollama's default num_keep
_OPEN_ENDED_CONTEXTS = 10  # Ollama's openEndedGenerationContextMultiplier


@dataclass
class Generation:
    """One submitted generation: where its output goes, and its timing marks (ns)."""

    request_id: int
    out: LineWriter
    sequence: NewSequence  # what the engine is asked to add
    submitted_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int = 0
    seq_id: int | None = None  # set by the engine thread when the engine takes it
    direct: DirectStream | None = None  # text goes straight to the client (olla.runner.direct)
    accepted: bool = False  # a direct stream's `Accepted` has gone to the daemon


@dataclass
class Embedding:
    """One embed request: its inputs, tokenized."""

    request_id: int
    out: LineWriter
    tokens: list[list[int]]
    truncate: bool
    normalize: bool = True


@dataclass(frozen=True)
class Prompt:
    """A prompt's token ids and its images' spans (olla.engine.images), in order."""

    ids: list[int]
    images: tuple[ImageSpan, ...] = ()


def generation(
    submit: Submit, out: LineWriter, host: ModelHost, num_ctx: int, prompt: Prompt | None = None
) -> Generation:
    """The prompt tokenized (or as `prompt` gives it, with images) and checked, the sampling
    parameters and the grammar made; InvalidRequest names what does not fit."""
    options = coerce_parameters(submit.options)
    params = SamplingParams.from_options(options)
    if submit.logprobs is not None:
        params = dataclasses.replace(params, logprobs=int(submit.logprobs))
    context = list(submit.context)
    if any(not 0 <= t < host.vocab_size for t in context):
        raise InvalidRequest(
            'field "context" holds token ids this model does not have; send the context '
            "a reply of this model gave"
        )
    # after a context (which began with BOS), the prompt goes on without another
    if prompt is None:
        prompt = Prompt(host.tokenize(submit.prompt, add_special=not context))
    images = tuple(span.moved(span.start + len(context)) for span in prompt.images)
    prompt_ids = [*context, *prompt.ids]
    asked = options.get("num_keep")
    num_keep = keep_count(asked if isinstance(asked, int) else None, len(prompt_ids), num_ctx)
    if len(prompt_ids) >= num_ctx:
        if not (submit.truncate and host.can_shift):
            raise InvalidRequest(
                f"the prompt is {len(prompt_ids)} tokens, more than the context of "
                f"{num_ctx}; shorten it or raise num_ctx"
            )
        prompt_ids, images = truncate(prompt_ids, num_ctx, num_keep, images)
    shift = submit.shift and host.can_shift
    # with shift, as Ollama (llm/llama_server.go, boundedNumPredict): open-ended generation,
    # or a longer num_predict, stops after several contexts' worth, so that a model that never
    # says its end-of-generation token cannot run for ever with no OLLA_MAX_PREDICT or timeout
    limit = _OPEN_ENDED_CONTEXTS * num_ctx if shift else num_ctx - len(prompt_ids)
    max_tokens = limit if params.num_predict < 0 else min(params.num_predict, limit)
    constraint = host.constraint(submit.format) if submit.format else None
    sequence = NewSequence(
        prompt_ids,
        params,
        max_tokens,
        submit.user,
        constraint,
        shift=shift,
        num_keep=num_keep,
        images=images,
    )
    return Generation(submit.id, out, sequence)


def keep_count(asked: int | None, num_prompt_tokens: int, num_ctx: int) -> int:
    """Tokens at the start a shift or a truncation keeps: the `num_keep` option (default 4,
    negative: the whole prompt, as Ollama), less than the context so a shift frees room."""
    keep = _NUM_KEEP if asked is None else asked
    if keep < 0:
        keep = num_prompt_tokens
    return max(0, min(keep, num_ctx - 1))


def truncate(
    prompt_ids: list[int], num_ctx: int, num_keep: int, images: tuple[ImageSpan, ...] = ()
) -> tuple[list[int], tuple[ImageSpan, ...]]:
    """A prompt of num_ctx tokens or more cut as Ollama cuts it: its first `num_keep` tokens,
    then its latest, num_ctx - max((num_ctx - num_keep) // 2, 1) in all, so that about half
    the context after the kept head is left to answer in before the first shift.

    An image is kept whole or not at all: the head ends before one it would cut, the tail
    starts after one (the latest images are the ones kept). InvalidRequest if none is left
    that fits."""
    limit = num_ctx - max((num_ctx - num_keep) // 2, 1)
    head, tail = num_keep, len(prompt_ids) - (limit - num_keep)
    for span in images:
        if span.start < head < span.end:
            head = span.start
        if span.start < tail < span.end:
            tail = span.end
    kept = [*prompt_ids[:head], *prompt_ids[tail:]]
    if images and len(kept) <= head:
        raise InvalidRequest(
            f"the prompt's last image does not fit in the context of {num_ctx} tokens; "
            "raise num_ctx or send a smaller image"
        )
    images = tuple(
        span if span.end <= head else span.moved(span.start - (tail - head))
        for span in images
        if span.end <= head or span.start >= tail
    )
    log.warning(
        "truncating the prompt from %d to %d tokens (context %d, keep %d)",
        len(prompt_ids),
        len(kept),
        num_ctx,
        num_keep,
        extra={"prompt_tokens": len(prompt_ids), "kept_tokens": len(kept), "num_ctx": num_ctx},
    )
    return kept, images


def embedding(embed: Embed, out: LineWriter, host: ModelHost) -> Embedding:
    """Each input tokenized; the engine thread embeds them."""
    tokens = [host.tokenize(text, add_special=True) for text in embed.inputs]
    return Embedding(embed.id, out, tokens, embed.truncate, embed.normalize)


def unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`vector` scaled to length 1 (a zero vector as it is)."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def fit(job: Embedding, limit: int) -> list[list[int]]:
    """Each input within what one embedding takes: cut when truncating, else a 400."""
    fitted = []
    for i, ids in enumerate(job.tokens):
        if not ids:
            raise InvalidRequest(f"input {i} is empty; embed some text")
        if len(ids) > limit and not job.truncate:
            raise InvalidRequest(
                f"input {i} is {len(ids)} tokens, more than the {limit} an embedding of "
                "this model takes; shorten it or send truncate: true"
            )
        fitted.append(ids[:limit])
    return fitted
