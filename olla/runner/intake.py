"""Request intake: a `Submit` or `Embed` checked against the model and made ready for the engine.

Everything here runs on the runner's event loop as a request arrives, so a bad request gets its
error before it costs the engine anything.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from olla.chat import coerce_parameters
from olla.engine.sampling import SamplingParams
from olla.engine.sequence import NewSequence
from olla.errors import InvalidRequest
from olla.runner.build import ModelHost
from olla.runner.direct import DirectStream
from olla.wire.lines import LineWriter
from olla.wire.messages import Embed, Submit


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


def generation(submit: Submit, out: LineWriter, host: ModelHost, num_ctx: int) -> Generation:
    """The prompt tokenized and checked, the sampling parameters and the grammar made;
    InvalidRequest names what does not fit."""
    params = SamplingParams.from_options(coerce_parameters(submit.options))
    if submit.logprobs is not None:
        params = dataclasses.replace(params, logprobs=int(submit.logprobs))
    context = list(submit.context)
    if any(not 0 <= t < host.vocab_size for t in context):
        raise InvalidRequest(
            'field "context" holds token ids this model does not have; send the context '
            "a reply of this model gave"
        )
    # after a context (which began with BOS), the prompt goes on without another
    prompt_ids = [*context, *host.tokenize(submit.prompt, add_special=not context)]
    if len(prompt_ids) >= num_ctx:
        raise InvalidRequest(
            f"the prompt is {len(prompt_ids)} tokens, more than the context of "
            f"{num_ctx}; shorten it or raise num_ctx"
        )
    room = num_ctx - len(prompt_ids)
    max_tokens = room if params.num_predict < 0 else min(params.num_predict, room)
    constraint = host.constraint(submit.format) if submit.format else None
    sequence = NewSequence(prompt_ids, params, max_tokens, submit.user, constraint)
    return Generation(submit.id, out, sequence)


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
