"""OpenAI's Responses API (/v1/responses) through the official `openai` client's `responses`,
against a real daemon and SmolLM2: only the base URL changes. One daemon serves the module: the
plain model, a tool-capable one and a thinking one, all from the same GGUF."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.conftest import MODELFILE, Daemon, make_daemon
from tests.daemon_helpers import create_model
from tests.integration.test_official_clients import CITY, MODEL, TOOLS_TEMPLATE
from tests.integration.test_thinking import THINKER

QUESTION = "What is the capital of France?"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK_WEATHER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def _create(daemon: Daemon, name: str, modelfile: Path) -> None:
    create_model(daemon, name, modelfile)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("responses"))
    d.start()
    _create(d, MODEL, MODELFILE)
    files = tmp_path_factory.mktemp("modelfiles")
    for name, template in (("tooly", TOOLS_TEMPLATE), ("thinker", THINKER)):
        (files / name).write_text(f'FROM {MODEL}\nTEMPLATE """{template}"""\n')
        _create(d, name, files / name)
    yield d
    d.stop()


@pytest.fixture
def oa(served: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused", max_retries=0)


def test_create_whole_and_raw_stream_agree(oa: openai.OpenAI) -> None:
    asked: Any = {"model": MODEL, "input": QUESTION, "temperature": 0, "max_output_tokens": 24}
    whole = oa.responses.create(**asked, instructions="Answer briefly.", metadata={"k": "v"})
    assert whole.object == "response" and whole.id.startswith("resp_") and whole.model == MODEL
    assert whole.status in ("completed", "incomplete") and whole.output_text.strip()
    assert whole.instructions == "Answer briefly." and whole.metadata == {"k": "v"}
    assert whole.usage is not None and whole.usage.output_tokens > 0
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens

    events = list(oa.responses.create(**asked, instructions="Answer briefly.", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        f"response.{whole.status}",
    ]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text  # greedy: streamed and whole agree
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    assert last.response.output_text == text and last.response.usage is not None
    counts = (last.response.usage.input_tokens, last.response.usage.output_tokens)
    assert counts == (whole.usage.input_tokens, whole.usage.output_tokens)
    assert last.response.id == events[0].response.id  # type: ignore[union-attr]


def test_the_stream_helper_gives_the_final_response(oa: openai.OpenAI) -> None:
    asked: Any = {"model": MODEL, "input": QUESTION, "temperature": 0, "max_output_tokens": 200}
    with oa.responses.stream(**asked) as stream:
        deltas = [e for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()  # needs response.completed: the answer ended
    assert final.status == "completed" and final.output_text
    assert deltas[-1].snapshot == final.output_text == "".join(d.delta for d in deltas)
    assert final.output_text == oa.responses.create(**asked).output_text


def test_max_output_tokens_makes_it_incomplete(oa: openai.OpenAI) -> None:
    cut = oa.responses.create(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage is not None and cut.usage.output_tokens == 3
    events = list(
        oa.responses.create(
            model=MODEL, input=QUESTION, temperature=0, max_output_tokens=3, stream=True
        )
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == cut.output_text


def test_events_are_named_on_the_wire_and_end_without_done(served: Daemon) -> None:
    body = {"model": MODEL, "input": QUESTION, "max_output_tokens": 4, "stream": True}
    with httpx.stream("POST", served.base_url + "/v1/responses", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        blocks = [b for b in r.read().decode().split("\n\n") if b]
    for block in blocks:
        event, data = block.split("\n")
        assert event == "event: " + json.loads(data.removeprefix("data: "))["type"]
    assert "[DONE]" not in blocks[-1]


def test_a_forced_function_call_and_its_output_sent_back(oa: openai.OpenAI) -> None:
    forced = oa.responses.create(
        model="tooly",
        input=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=60,
    )
    (call,) = forced.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    assert call.call_id and call.status == "completed" and forced.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])

    answered = oa.responses.create(
        model="tooly",
        input=[
            *ASK_WEATHER,
            *forced.output,
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
        ],
        tools=[WEATHER],
        max_output_tokens=24,
    )
    assert answered.output and answered.usage is not None and forced.usage is not None
    # the call and its output are in the prompt: it grew by more than the call's arguments
    assert answered.usage.input_tokens > forced.usage.input_tokens + 10

    named: Any = {"type": "function", "name": "get_weather"}
    events = list(
        oa.responses.create(
            model="tooly",
            input=ASK_WEATHER,
            tools=[WEATHER],
            tool_choice=named,
            max_output_tokens=60,
            stream=True,
        )
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.name for e in done] == ["get_weather"]  # type: ignore[attr-defined]
    (item,) = events[-1].response.output
    assert isinstance(item, ResponseFunctionToolCall) and item.arguments == done[0].arguments


def test_a_json_schema_answer_parses_and_validates(oa: openai.OpenAI) -> None:
    shaped = oa.responses.create(
        model=MODEL,
        input=QUESTION,
        temperature=0,
        max_output_tokens=200,
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}},
    )
    jsonschema.validate(json.loads(shaped.output_text), CITY)
    assert shaped.text is not None and shaped.text.format.type == "json_schema"
    anything = oa.responses.create(
        model=MODEL,
        input=QUESTION,
        temperature=0,
        max_output_tokens=200,
        text={"format": {"type": "json_object"}},
    )
    json.loads(anything.output_text)


def test_errors_are_the_sdk_s_typed_errors(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as stateful:
        oa.responses.create(model=MODEL, input=QUESTION, previous_response_id="resp_1")
    assert "stateless" in stateful.value.message and "input" in stateful.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        oa.responses.create(model="nope", input=QUESTION)
    assert "nope" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        oa.responses.create(model="nope", input=QUESTION, stream=True)
    with pytest.raises(openai.BadRequestError) as builtin:
        oa.responses.create(model="tooly", input=QUESTION, tools=[{"type": "web_search"}])
    assert "web_search" in builtin.value.message
    stored = oa.responses.create(model=MODEL, input=QUESTION, max_output_tokens=2, store=True)
    assert stored.store is False  # accepted, nothing kept (as Ollama)


def test_reasoning_comes_as_a_reasoning_item_and_goes_back_as_input(oa: openai.OpenAI) -> None:
    asked: Any = {"model": "thinker", "input": "Why is the sky blue?", "temperature": 0}
    whole = oa.responses.create(**asked, max_output_tokens=24, reasoning={"effort": "low"})
    reasoning = whole.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text
    assert whole.reasoning is not None and whole.reasoning.effort == "low"
    assert "<think>" not in reasoning.summary[0].text + whole.output_text

    events = list(
        oa.responses.create(**asked, max_output_tokens=24, reasoning={"effort": "low"}, stream=True)
    )
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert thought == reasoning.summary[0].text  # greedy: streamed and whole agree

    again = oa.responses.create(
        **{**asked, "input": [{"role": "user", "content": "Why?"}, *whole.output]},
        max_output_tokens=4,
    )
    assert again.usage is not None and again.usage.output_tokens > 0
    plain = oa.responses.create(**asked, max_output_tokens=8, reasoning={"effort": "none"})
    assert [o.type for o in plain.output] == ["message"]


def test_an_error_after_the_start_is_a_response_failed_event(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    """A stream cut by OLLA_REQUEST_TIMEOUT ends with response.failed, which the SDK reads."""
    d = make_daemon(tmp_path)
    d.env.update(OLLA_REQUEST_TIMEOUT="1s")
    d.start()
    try:
        _create(d, MODEL, MODELFILE)
        # the prompt is the input alone, so the model goes on counting past the time limit
        counter = tmp_path / "counter"
        counter.write_text(
            f'FROM {MODEL}\nTEMPLATE """{{{{ range .Messages }}}}{{{{ .Content }}}}{{{{ end }}}}"""'
            "\nPARAMETER repeat_penalty 1.0\n"
        )
        _create(d, "counter", counter)
        client = openai.OpenAI(base_url=d.base_url + "/v1", api_key="unused", max_retries=0)
        asked: Any = {"model": "counter", "input": "1, 2, 3, 4,", "temperature": 0}
        with pytest.raises(openai.APIStatusError) as whole:  # nothing sent yet: its status
            client.responses.create(**asked, max_output_tokens=3000)
        assert whole.value.status_code == 504
        events = list(client.responses.create(**asked, max_output_tokens=3000, stream=True))
        assert events[0].type == "response.created" and events[-1].type == "response.failed"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        failed = events[-1].response
        assert failed.status == "failed" and failed.error is not None
        assert "OLLA_REQUEST_TIMEOUT" in failed.error.message
        with client.responses.stream(**asked, max_output_tokens=3000) as stream:
            assert [e.type for e in stream][-1] == "response.failed"
            with pytest.raises(RuntimeError, match="response.completed"):
                stream.get_final_response()
    finally:
        d.stop()
