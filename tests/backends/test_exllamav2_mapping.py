"""olla's requests on exllamav2's dynamic generator, against a fake of its job interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from olla.backends.exllamav2 import GeneratorEngine, job_options, sampler_settings
from olla.engine.sampling_params import SamplingParams
from olla.engine.sequence import NewSequence
from olla.errors import InvalidRequest

EOS = 2
GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)


class FakeJob:
    def __init__(self, prompt: list[int], settings: dict[str, Any], options: dict[str, Any]):
        self.prompt, self.settings, self.options = prompt, settings, options
        self.new_tokens = 0
        self.started = False


class FakeGenerator:
    """One token per job per iterate(), as exllamav2's results: a "started" result first, then
    "streaming" ones; stop tokens, stop strings (held back from the text) and max_new_tokens."""

    def __init__(self, eos_after: dict[int, int] | None = None) -> None:
        self.jobs: list[FakeJob] = []
        self.cancelled: list[FakeJob] = []
        self.eos_after = eos_after or {}  # first prompt token -> emit EOS at this many tokens

    def enqueue(self, job: FakeJob) -> None:
        self.jobs.append(job)

    def cancel(self, job: FakeJob) -> None:
        self.jobs.remove(job)
        self.cancelled.append(job)

    def num_remaining_jobs(self) -> int:
        return len(self.jobs)

    def iterate(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for job in list(self.jobs):
            if not job.started:
                job.started = True
                results.append({"job": job, "stage": "started", "eos": False})
                continue
            job.new_tokens += 1
            at = self.eos_after.get(job.prompt[0])
            token = EOS if at == job.new_tokens else 10 + (sum(job.prompt) + job.new_tokens) % 50
            text = "" if token == EOS else ("STOP" if token == 33 else f"t{token} ")
            r = {
                "job": job,
                "stage": "streaming",
                "eos": False,
                "text": text,
                "token_ids": np.array([[token]]),
            }
            stops = job.options["stop_conditions"]
            reason = (
                "stop_token"
                if token in stops
                else "stop_string"
                if any(isinstance(s, str) and s in text for s in stops)
                else "max_new_tokens"
                if job.new_tokens >= job.options["max_new_tokens"]
                else None
            )
            if reason is not None:
                r.update(
                    eos=True,
                    eos_reason=reason,
                    new_tokens=job.new_tokens,
                    time_enqueued=0.001,
                    time_prefill=0.002,
                    time_generate=0.003,
                )
                if reason == "stop_string":
                    r.update(text="", eos_triggering_string="STOP")
                self.jobs.remove(job)
            results.append(r)
        return results


def make(generator: FakeGenerator, max_model_len: int = 64) -> GeneratorEngine:
    return GeneratorEngine(generator, FakeJob, stop_tokens=[EOS], max_model_len=max_model_len)


def run(engine: GeneratorEngine) -> dict[int, list[Any]]:
    outputs: dict[int, list[Any]] = {}
    for _ in range(1000):
        if not engine.has_work:
            break
        for out in engine.step():
            outputs.setdefault(out.seq_id, []).append(out)
    assert not engine.has_work
    return outputs


def test_ollama_options_become_exllamav2_sampler_settings() -> None:
    defaults = sampler_settings(SamplingParams())  # Ollama's defaults
    assert defaults == {
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.0,
        "typical": 0.0,
        "token_repetition_penalty": 1.0,
        "token_repetition_range": 0,  # no penalty (Ollama's 1.0): no range
        "token_frequency_penalty": 0.0,
        "token_presence_penalty": 0.0,
    }
    greedy = sampler_settings(SamplingParams(temperature=0, top_p=0.5))
    assert (greedy["top_k"], greedy["top_p"], greedy["temperature"]) == (1, 0.0, 1.0)
    off = sampler_settings(SamplingParams(repeat_last_n=0, top_p=1.0, typical_p=0.7, top_k=0))
    assert off["token_repetition_penalty"] == 1.0 and off["token_repetition_range"] == 0
    assert (off["top_p"], off["typical"], off["top_k"]) == (0.0, 0.7, 0)


def test_job_options_carry_stops_length_and_seed() -> None:
    params = SamplingParams(stop=("\n\n", "User:"), seed=7)
    assert job_options(params, 100, [2, 7]) == {
        "max_new_tokens": 100,
        "stop_conditions": [2, 7, "\n\n", "User:"],
        "seed": 7,
    }
    assert job_options(SamplingParams(seed=-1), 5, [])["seed"] is None  # Ollama's -1: random


def test_jobs_stream_and_end_with_ollamas_reasons_and_counts() -> None:
    generator = FakeGenerator(eos_after={5: 3})
    engine = make(generator)
    stopped = engine.add(NewSequence([5, 6], GREEDY, 20))  # EOS at its third token
    long = engine.add(NewSequence([7, 8, 9], GREEDY, 4))
    worded = engine.add(NewSequence([1, 1, 1], SamplingParams(temperature=0, stop=("STOP",)), 30))
    outputs = run(engine)

    final = outputs[stopped][-1]
    assert final.finished and final.done_reason == "stop"
    assert final.num_prompt_tokens == 2 and final.num_completion_tokens == 3
    assert (final.queue_ns, final.prompt_eval_ns, final.eval_ns) == (
        1_000_000,
        2_000_000,
        3_000_000,
    )
    assert sum(len(o.token_ids) for o in outputs[long]) == 4
    assert outputs[long][-1].done_reason == "length"
    assert [o.finished for o in outputs[long]] == [False, False, False, True]
    assert outputs[worded][-1].done_reason == "stop" and outputs[worded][-1].text == ""
    assert outputs[worded][-1].stop_sequence == "STOP" and final.stop_sequence == ""
    assert "".join(o.text for o in outputs[long]).startswith("t")
    assert not generator.cancelled


def test_abort_cancels_the_job_and_nothing_more_comes_for_it() -> None:
    generator = FakeGenerator()
    engine = make(generator)
    first, second = (
        engine.add(NewSequence([3, 4], GREEDY, 50)),
        engine.add(NewSequence([5, 6], GREEDY, 3)),
    )
    engine.step()  # started
    engine.step()  # a token each
    out = engine.abort(first)
    assert out is not None and out.finished and out.done_reason == "cancelled"
    assert out.num_completion_tokens == 1
    assert [j.prompt for j in generator.cancelled] == [[3, 4]]
    assert engine.abort(first) is None
    outputs = run(engine)
    assert set(outputs) == {second}


def test_what_exllamav2_cannot_do_is_a_400_before_anything_is_enqueued() -> None:
    generator = FakeGenerator()
    engine = make(generator, max_model_len=8)

    class Grammar:
        closed = False

        def close(self) -> None:
            self.closed = True

    grammar = Grammar()
    with pytest.raises(InvalidRequest, match="not to JSON or a schema"):
        engine.add(NewSequence([1, 2], GREEDY, 4, constraint=grammar))  # type: ignore[arg-type]
    assert grammar.closed
    with pytest.raises(InvalidRequest, match="logprobs"):
        engine.add(NewSequence([1, 2], SamplingParams(logprobs=2), 4))
    with pytest.raises(InvalidRequest, match="context holds 8"):
        engine.add(NewSequence(list(range(8)), GREEDY, 4))
    assert not generator.jobs and not engine.has_work
    seq = engine.add(NewSequence([1, 2, 3], GREEDY, 100))  # the length is capped by the context
    assert generator.jobs[0].options["max_new_tokens"] == 5
    assert run(engine)[seq][-1].num_completion_tokens == 5
