"""The exllamav2 backend's engine: olla's requests mapped onto exllamav2's dynamic generator.

`ExLlamaV2DynamicGenerator` already batches continuously over a paged cache (256-token pages,
shared prefixes stored once, chunked prefill), so olla does not rebuild that. `GeneratorEngine`
gives the generator the face of olla's own `Engine` (add, abort, step, has_work, stats), so the
runner drives either the same way: each request becomes one `ExLlamaV2DynamicJob` (prompt ids,
sampler settings from Ollama's option names, stop strings and tokens, max new tokens, seed), and
each `iterate()` result becomes a `StepOutput`. exllamav2 detokenizes and holds back stop
strings itself.

The generator and its jobs come from outside (`make_job`), so the mapping runs in CPU CI against
a fake of the job interface; loading a real model (torch, CUDA) is not done here. Without
flash-attn exllamav2 runs its generator unpaged, one sequence at a time (docs/gpu.md).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from olla.engine.engine import StepOutput, check_prompt
from olla.engine.sampling_params import SamplingParams
from olla.engine.sequence import NewSequence
from olla.errors import InvalidRequest

# exllamav2's own filters cover a fixed prefix or a choice of strings; JSON and schemas need a
# third-party package (lm-format-enforcer, formatron), which olla does not take on
FORMAT_UNSUPPORTED = (
    "structured output (format) is not supported for exllamav2 models: exllamav2's own filters "
    "constrain to a prefix or a fixed choice, not to JSON or a schema; use a GGUF model, or ask "
    "for JSON in the prompt"
)

# exllamav2's reasons a job ended, as Ollama's done_reason
_DONE_REASONS = {
    "stop_token": "stop",
    "stop_string": "stop",
    "end_filter": "stop",
    "max_new_tokens": "length",
}


class Generator(Protocol):
    """What olla uses of ExLlamaV2DynamicGenerator."""

    def enqueue(self, job: Any) -> Any: ...

    def cancel(self, job: Any) -> Any: ...

    def iterate(self) -> list[dict[str, Any]]: ...

    def num_remaining_jobs(self) -> int: ...


# (prompt ids, sampler settings, job options) -> a job; the real one builds ExLlamaV2DynamicJob
MakeJob = Callable[[list[int], dict[str, Any], dict[str, Any]], Any]


def sampler_settings(params: SamplingParams) -> dict[str, Any]:
    """ExLlamaV2Sampler.Settings attributes for Ollama's options (each one's "off" as exllamav2
    spells it: top_k 0, top_p 1 -> 0, typical_p 1 -> 0, penalty 1.0 or range 0)."""
    greedy = params.greedy
    penalize = params.penalized
    return {
        "temperature": 1.0 if greedy else params.temperature,
        "top_k": 1 if greedy else params.top_k,
        "top_p": 0.0 if greedy or params.top_p >= 1 else params.top_p,
        "min_p": 0.0 if greedy else params.min_p,
        "typical": 0.0 if greedy or params.typical_p >= 1 else params.typical_p,
        "token_repetition_penalty": params.repeat_penalty if penalize else 1.0,
        "token_repetition_range": params.repeat_last_n if penalize else 0,
        "token_frequency_penalty": params.frequency_penalty if penalize else 0.0,
        "token_presence_penalty": params.presence_penalty if penalize else 0.0,
    }


def job_options(
    params: SamplingParams, max_tokens: int, stop_tokens: Sequence[int]
) -> dict[str, Any]:
    """The job's other arguments: length, stop conditions (strings and end tokens), seed."""
    seed = params.seed if params.seed is not None and params.seed >= 0 else None
    return {
        "max_new_tokens": max_tokens,
        "stop_conditions": [*stop_tokens, *params.stop],
        "seed": seed,
    }


class GeneratorEngine:
    """olla's Engine interface over an exllamav2 dynamic generator."""

    def __init__(
        self,
        generator: Generator,
        make_job: MakeJob,
        stop_tokens: Sequence[int],
        max_model_len: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.generator = generator
        self._make_job = make_job
        self._stop_tokens = list(stop_tokens)
        self.max_model_len = max_model_len
        self._clock = clock
        self._ids = itertools.count(1)
        self._jobs: dict[int, _Job] = {}  # by olla's sequence id
        self._by_job: dict[int, _Job] = {}  # by id() of exllamav2's job object
        self.num_steps = 0

    @property
    def has_work(self) -> bool:
        return bool(self._jobs)

    def add(self, new: NewSequence) -> int:
        """Enqueue a job for the prompt; returns its sequence id. InvalidRequest if olla
        cannot ask it of exllamav2."""
        if new.constraint is not None:
            new.constraint.close()
            raise InvalidRequest(FORMAT_UNSUPPORTED)
        if new.params.logprobs >= 0:
            raise InvalidRequest("logprobs are not supported by exllamav2 models")
        prompt_ids, params = new.prompt_ids, new.params
        check_prompt(prompt_ids, self.max_model_len)
        max_tokens = min(new.max_tokens, self.max_model_len - len(prompt_ids))
        options = job_options(params, max_tokens, self._stop_tokens)
        job = self._make_job(list(prompt_ids), sampler_settings(params), options)
        seq_id = next(self._ids)
        entry = _Job(seq_id, job, len(prompt_ids), self._clock())
        self.generator.enqueue(job)
        self._jobs[seq_id] = entry
        self._by_job[id(job)] = entry
        return seq_id

    def abort(self, seq_id: int) -> StepOutput | None:
        """Cancel a job: exllamav2 frees its pages; returns its final output."""
        entry = self._jobs.pop(seq_id, None)
        if entry is None:
            return None
        del self._by_job[id(entry.job)]
        self.generator.cancel(entry.job)
        out = StepOutput(seq_id, finished=True, done_reason="cancelled")
        self._fill_counts(out, entry)
        return out

    def step(self) -> list[StepOutput]:
        """One `iterate()` of the generator: each streaming result as a StepOutput."""
        self.num_steps += 1
        outputs = []
        for result in self.generator.iterate():
            entry = self._by_job.get(id(result.get("job")))
            if entry is None or result.get("stage") != "streaming":
                continue  # "started" and "prefill" stages carry no tokens
            ids = result.get("token_ids")
            tokens = [int(t) for t in ids.flatten().tolist()] if ids is not None else []
            if tokens and entry.first_token is None:
                entry.first_token = self._clock()
            entry.completion += len(tokens)
            out = StepOutput(entry.seq_id, text=result.get("text", ""), token_ids=tokens)
            if result.get("eos"):
                out.finished = True
                out.done_reason = _DONE_REASONS.get(result.get("eos_reason", ""), "stop")
                if result.get("eos_reason") == "stop_string":
                    out.stop_sequence = str(result.get("eos_triggering_string") or "")
                entry.completion = int(result.get("new_tokens", entry.completion))
                self._fill_counts(out, entry, result)
                del self._jobs[entry.seq_id], self._by_job[id(entry.job)]
            outputs.append(out)
        return outputs

    def _fill_counts(
        self, out: StepOutput, entry: _Job, result: dict[str, Any] | None = None
    ) -> None:
        out.num_prompt_tokens = entry.num_prompt_tokens
        out.num_completion_tokens = entry.completion
        out.total_ns = _ns(self._clock() - entry.arrival)
        if result is not None:  # exllamav2's own timings, in seconds
            out.queue_ns = _ns(result.get("time_enqueued", 0.0))
            out.prompt_eval_ns = _ns(result.get("time_prefill", 0.0))
            out.eval_ns = _ns(result.get("time_generate", 0.0))

    def stats(self) -> dict[str, Any]:
        """Counters for health checks and metrics (the generator keeps its own pages)."""
        return {"running": len(self._jobs), "waiting": 0, "steps": self.num_steps}


class _Job:
    """One request's job and what olla counts of it."""

    __slots__ = ("seq_id", "job", "num_prompt_tokens", "arrival", "first_token", "completion")

    def __init__(self, seq_id: int, job: Any, num_prompt_tokens: int, arrival: float) -> None:
        self.seq_id, self.job = seq_id, job
        self.num_prompt_tokens, self.arrival = num_prompt_tokens, arrival
        self.first_token: float | None = None
        self.completion = 0


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))
