"""The events a step's output makes for one request: its text chunk, and at the end `Done`
(or a `Failure`, for a request that waited past the queue timeout)."""

from __future__ import annotations

from olla.engine.engine import StepOutput
from olla.engine.sampling import TokenLogprob
from olla.engine.sequence import QUEUE_TIMEOUT
from olla.errors import Overloaded
from olla.runner.build import ModelHost
from olla.runner.intake import Generation
from olla.units import format_duration
from olla.wire.messages import Chunk, Done, Failure, Logprob
from olla.wire.spec import RunnerSpec

_RETRY_AFTER = 2.0  # seconds, as the daemon's own refusals of a busy model say


def chunk(request: Generation, output: StepOutput, host: ModelHost) -> Chunk | None:
    """The text (and log-probabilities) a step released for the request; None if nothing."""
    if not output.text and not output.logprobs:
        return None
    logprobs = tuple(logprob(host, drawn) for drawn in output.logprobs)
    return Chunk(request.request_id, output.text, logprobs)


def logprob(host: ModelHost, drawn: TokenLogprob) -> Logprob:
    """A token's log-probability with its text, bytes and best alternatives."""
    token, value, best = drawn

    def entry(token: int, value: float, top: tuple[Logprob, ...] = ()) -> Logprob:
        data = host.token_bytes(token)
        return Logprob(data.decode("utf-8", errors="replace"), value, tuple(data), top)

    return entry(token, value, tuple(entry(t, lp) for t, lp in best))


def done(request: Generation, output: StepOutput, now: int) -> Done:
    """The request's end: why, its counts, its times, and its context for a next turn."""
    first = request.first_token_ns or now
    return Done(
        id=request.request_id,
        done_reason=output.done_reason or "stop",
        stop_sequence=output.stop_sequence,
        prompt_eval_count=output.num_prompt_tokens,
        prompt_cached_count=output.num_cached_tokens,
        eval_count=output.num_completion_tokens,
        prompt_eval_duration=first - request.submitted_ns,
        eval_duration=now - first,
        context=(*request.sequence.prompt_ids, *output.all_output_ids),
    )


def end(request: Generation, output: StepOutput, now: int, spec: RunnerSpec) -> Done | Failure:
    """The request's last event: `Done`, or a 503 `Failure` if it never got a sequence."""
    if output.done_reason == QUEUE_TIMEOUT:
        return Failure.of(request.request_id, queue_timeout(output, spec))
    return done(request, output, now)


def queue_timeout(output: StepOutput, spec: RunnerSpec) -> Overloaded:
    """The error of a request that waited `spec.queue_timeout` for a sequence: which model,
    how long, and what to do."""
    name = spec.model_name or spec.model_path
    waited = format_duration(round(output.total_ns / 1e9, 1))
    return Overloaded(
        f"{name} is busy: this request waited {waited} and none of its {spec.num_parallel} "
        f"sequences came free (OLLA_QUEUE_TIMEOUT={format_duration(spec.queue_timeout)}); "
        "retry later, or raise OLLA_NUM_PARALLEL or OLLA_QUEUE_TIMEOUT",
        retry_after=_RETRY_AFTER,
    )
