"""The official `openai` and `ollama` Python clients against a real daemon and SmolLM2: only
the base URL changes. One daemon serves the whole module (each test names what it needs)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import ollama
import openai
import pytest

from tests.conftest import MODELFILE, Daemon, make_daemon
from tests.daemon_helpers import create_model

MODEL = "smollm2:135m"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "country": {"type": "string", "maxLength": 20},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("clients"))
    d.start()
    create_model(d, MODEL, MODELFILE)
    yield d
    d.stop()


# A tools-capable template for the default model's GGUF (SmolLM2's own has no place for tools)
TOOLS_TEMPLATE = """{{- if or .System .Tools }}<|im_start|>system
{{ .System }}
{{- if .Tools }}
You can call these functions:
{{- range .Tools }}
{{ .Function }}
{{- end }}
To call one, answer with {"name": <function-name>, "arguments": <args-json-object>} only.
{{- end }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}{{ else }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", \
"arguments": {{ .Function.Arguments }}}{{ end }}{{ end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>user
Result of {{ .ToolName }}: {{ .Content }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tooly(served: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    modelfile = tmp_path_factory.mktemp("tooly") / "Modelfile"
    modelfile.write_text(f'FROM {MODEL}\nTEMPLATE """{TOOLS_TEMPLATE}"""\n')
    create_model(served, "tooly", modelfile)
    return "tooly:latest"


@pytest.fixture
def oa(served: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def ol(served: Daemon) -> ollama.Client:
    return ollama.Client(host=served.base_url)


def test_openai_chat_completion_whole_and_streamed(oa: openai.OpenAI) -> None:
    whole = oa.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, seed=1
    )
    choice = whole.choices[0]
    assert (choice.message.content or "").strip() and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and whole.object == "chat.completion"
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        oa.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            temperature=0,
            max_tokens=24,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # greedy: streamed and whole agree
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == choice.finish_reason and set(finishes[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    # the same counts; the streamed request found the whole one's prompt in the prefix cache
    assert last.usage.model_dump(exclude={"prompt_tokens_details"}) == whole.usage.model_dump(
        exclude={"prompt_tokens_details"}
    )
    cached = last.usage.prompt_tokens_details
    assert cached is not None and 0 < (cached.cached_tokens or 0) < last.usage.prompt_tokens


def test_openai_max_tokens_stop_and_penalties(oa: openai.OpenAI) -> None:
    short = oa.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_completion_tokens=3
    )
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3

    def answer(stop: list[str] | None) -> openai.types.chat.ChatCompletion:
        return oa.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            temperature=0,
            max_tokens=24,
            stop=stop,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            top_p=0.9,
        )

    whole = answer(None).choices[0].message.content or ""
    words = whole.split()
    assert len(words) >= 3, whole
    stop = words[len(words) // 2]  # a word from the middle of the answer greedy gives without it
    stopped = answer([stop]).choices[0]
    assert stopped.message.content == whole.split(stop)[0]  # cut before the stop, not changed
    assert stopped.finish_reason == "stop"


def test_openai_json_schema_and_json_object(oa: openai.OpenAI) -> None:
    spec = {"name": "city", "schema": CITY, "strict": True}
    schema = oa.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": spec},
    )
    jsonschema.validate(json.loads(schema.choices[0].message.content or ""), CITY)
    anything = oa.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=200,
        response_format={"type": "json_object"},
    )
    json.loads(anything.choices[0].message.content or "")


def test_openai_completions_and_models(oa: openai.OpenAI) -> None:
    done = oa.completions.create(
        model=MODEL, prompt="What is the capital of France?", temperature=0, max_tokens=12
    )
    assert done.choices[0].text.strip() and done.object == "text_completion"
    streamed = "".join(
        c.choices[0].text
        for c in oa.completions.create(
            model=MODEL,
            prompt="What is the capital of France?",
            temperature=0,
            max_tokens=12,
            stream=True,
        )
        if c.choices
    )
    assert streamed == done.choices[0].text
    assert MODEL in [m.id for m in oa.models.list()]
    assert oa.models.retrieve(MODEL).id == MODEL


def test_openai_errors_are_typed(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oa.chat.completions.create(model="nope", messages=QUESTION)
    assert "nope" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("nope")
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=MODEL, messages=QUESTION, temperature=7)
    assert "temperature" in bad.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        oa.chat.completions.create(model=MODEL, messages=[])
    assert "messages" in empty.value.message


def test_ollama_chat_generate_and_format(ol: ollama.Client) -> None:
    reply = ol.chat(model=MODEL, messages=QUESTION, options={"temperature": 0, "num_predict": 24})
    assert reply.message.content.strip() and reply.done and reply.eval_count > 0
    streamed = "".join(
        part.message.content
        for part in ol.chat(
            model=MODEL,
            messages=QUESTION,
            stream=True,
            options={"temperature": 0, "num_predict": 24},
        )
    )
    assert streamed == reply.message.content
    generated = ol.generate(
        model=MODEL,
        prompt="What is the capital of France?",
        options={"temperature": 0, "num_predict": 24},
    )
    assert generated.response.strip() and generated.context
    shaped = ol.chat(
        model=MODEL, messages=QUESTION, format=CITY, options={"temperature": 0, "num_predict": 200}
    )
    jsonschema.validate(json.loads(shaped.message.content), CITY)


def test_ollama_model_management(ol: ollama.Client) -> None:
    assert MODEL in [m.model for m in ol.list().models]
    shown = ol.show(MODEL)
    assert shown.details.family == "llama" and "temperature" in (shown.parameters or "")
    assert ol.copy(MODEL, "copied:latest").status == "success"
    assert "copied:latest" in [m.model for m in ol.list().models]
    assert ol.delete("copied:latest").status == "success"
    ol.generate(model=MODEL, prompt="")  # an empty prompt loads the model
    assert MODEL in [m.model for m in ol.ps().models]


def test_ollama_errors_are_response_errors(ol: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        ol.chat(model="nope", messages=QUESTION)
    assert missing.value.status_code == 404 and "nope" in missing.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        ol.chat(model=MODEL, messages=QUESTION, options={"num_predict": -7})
    assert bad.value.status_code == 400 and "num_predict" in bad.value.error


def test_openai_tool_call_round_trip(oa: openai.OpenAI, tooly: str) -> None:
    forced = oa.chat.completions.create(
        model=tooly,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        seed=1,
    )
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    answered = oa.chat.completions.create(
        model=tooly,
        max_tokens=40,
        seed=1,
        tools=[WEATHER],
        messages=[
            *ASK_WEATHER,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
        ],
    )
    # the tool's result went into the prompt; what the model does with it is its own
    assert answered.usage.prompt_tokens > forced.usage.prompt_tokens
    assert answered.choices[0].finish_reason in ("stop", "length", "tool_calls")

    chunks = list(
        oa.chat.completions.create(
            model=tooly,
            messages=ASK_WEATHER,
            tools=[WEATHER],
            max_tokens=60,
            seed=1,
            stream=True,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tools_need_a_template_with_room_for_them(oa: openai.OpenAI, ol: ollama.Client) -> None:
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        oa.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER])
    with pytest.raises(ollama.ResponseError, match="does not support tools"):
        ol.chat(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER])


def test_ollama_chat_takes_tool_calls_and_results_back(ol: ollama.Client, tooly: str) -> None:
    history = [
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "18 C and sunny"},
    ]
    reply = ol.chat(
        model=tooly,
        messages=history,
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 40},
    )
    assert reply.done and (reply.message.content or reply.message.tool_calls)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # the vectors are normalised


def test_ollama_embeddings_are_normalised_and_mean_something(ol: ollama.Client) -> None:
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock markets fell today."]
    reply = ol.embed(model=MODEL, input=texts)
    cat, rug, stocks = reply.embeddings
    assert len(cat) == 576 and abs(cosine(cat, cat) - 1) < 1e-4
    assert cosine(cat, rug) > cosine(cat, stocks) and cosine(cat, rug) > cosine(rug, stocks)
    assert reply.prompt_eval_count and reply.prompt_eval_count > 10
    assert ol.embeddings(model=MODEL, prompt=texts[0]).embedding == pytest.approx(cat, abs=1e-5)
    short = ol.embed(model=MODEL, input=texts[0], dimensions=64).embeddings[0]
    assert len(short) == 64 and abs(cosine(short, short) - 1) < 1e-4
    with pytest.raises(ollama.ResponseError, match="truncate: true") as long:
        ol.embed(model=MODEL, input="word " * 600, truncate=False)
    assert long.value.status_code == 400
    assert ol.embed(model=MODEL, input="word " * 600).prompt_eval_count == 512


def test_openai_embeddings_float_and_base64(oa: openai.OpenAI, ol: ollama.Client) -> None:
    text = "The cat sits on the mat."
    expected = ol.embed(model=MODEL, input=text).embeddings[0]
    as_floats = oa.embeddings.create(model=MODEL, input=[text], encoding_format="float")
    assert as_floats.data[0].embedding == pytest.approx(expected, abs=1e-5)
    decoded = oa.embeddings.create(model=MODEL, input=text)  # the client asks for base64
    assert decoded.data[0].embedding == pytest.approx(expected, abs=1e-5)
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens > 0
    with pytest.raises(openai.BadRequestError, match="input"):
        oa.embeddings.create(model=MODEL, input=[[1, 2, 3]])


def test_ollama_generate_goes_on_from_a_context(ol: ollama.Client) -> None:
    greedy = {"temperature": 0, "num_predict": 6}
    first = ol.generate(model=MODEL, prompt="1, 2, 3, 4, 5,", raw=True, options=greedy)
    assert first.response and first.context
    assert len(first.context) == first.prompt_eval_count + first.eval_count
    # the context holds the prompt and the answer, token for token: going on from it is the same
    # as sending their text again
    second = ol.generate(model=MODEL, prompt=" 9,", raw=True, context=first.context, options=greedy)
    text = "1, 2, 3, 4, 5," + first.response + " 9,"
    again = ol.generate(model=MODEL, prompt=text, raw=True, options=greedy)
    assert second.response == again.response
    assert second.prompt_eval_count == again.prompt_eval_count > len(first.context)
    with pytest.raises(ollama.ResponseError, match="context") as bad:
        ol.generate(model=MODEL, prompt="Hi", context=[10**9])
    assert bad.value.status_code == 400


def test_a_suffix_needs_an_insert_template(
    ol: ollama.Client, served: Daemon, tmp_path: Path
) -> None:
    with pytest.raises(ollama.ResponseError, match="does not support insert"):
        ol.generate(model=MODEL, prompt="def add(a, b):", suffix="    return c")
    fim = tmp_path / "Modelfile"
    fim.write_text(
        f'FROM {MODEL}\nTEMPLATE "<|fim_prefix|>{{{{ .Prompt }}}}<|fim_suffix|>'
        '{{ .Suffix }}<|fim_middle|>"\n'
    )
    command = [sys.executable, "-m", "olla", "create", "fim", "-f", str(fim)]
    created = subprocess.run(command, env=served.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    filled = ol.generate(
        model="fim",
        prompt="def add(a, b):\n",
        suffix="    return c\n",
        options={"temperature": 0, "num_predict": 8},
    )
    assert filled.done and filled.prompt_eval_count and filled.prompt_eval_count > 10


def test_create_quantizes_an_f16_model_through_llama_cpp(
    ol: ollama.Client, served: Daemon, tmp_path: Path
) -> None:
    f16 = tmp_path / "tiny-f16.gguf"
    made = subprocess.run(
        [sys.executable, "scripts/synthetic_gguf", "--shape", "tiny", "--out", str(f16)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {f16}\n")
    command = [
        sys.executable,
        "-m",
        "olla",
        "create",
        "tiny-q4",
        "-f",
        str(modelfile),
        "-q",
        "q4_K_M",
    ]
    created = subprocess.run(command, env=served.env, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr
    assert "quantizing F16 model to Q4_K_M" in created.stdout
    shown = ol.show("tiny-q4")
    assert shown.details.quantization_level == "Q4_K_M"
    sizes = {m.model: m.size for m in ol.list().models}
    assert sizes["tiny-q4:latest"] < 0.5 * f16.stat().st_size
    reply = ol.generate(model="tiny-q4", prompt="Hi", options={"num_predict": 4})
    assert reply.done and reply.eval_count  # the quantized file loads and runs
    with pytest.raises(ollama.ResponseError, match="Q4_1 already"):
        ol.create(model="again", from_=MODEL, quantize="q8_0")
    with pytest.raises(ollama.ResponseError, match="unknown quantization"):
        ol.create(model="again", from_="tiny-q4", quantize="q3_fancy")


def test_logprobs_on_both_apis(oa: openai.OpenAI, ol: ollama.Client) -> None:
    whole = oa.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3
    )
    content = whole.choices[0].logprobs.content or []
    # an answer that ends by itself counts its end token, which has no text and no entry
    ended = whole.choices[0].finish_reason == "stop"
    assert len(content) == whole.usage.completion_tokens - ended and len(content) <= 8
    assert "".join(e.token for e in content) == whole.choices[0].message.content
    for entry in content:  # greedy: each token is its step's most likely one
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
    chunks = oa.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=8, logprobs=True, stream=True
    )
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content or []
    ]
    assert [e.token for e in streamed] == [e.token for e in content]
    legacy = oa.completions.create(
        model=MODEL,
        prompt="What is the capital of France?",
        temperature=0,
        max_tokens=6,
        logprobs=2,
    )
    assert len(legacy.choices[0].logprobs.tokens or []) == 6
    assert legacy.choices[0].logprobs.text_offset[0] == 0

    reply = ol.chat(
        model=MODEL,
        messages=QUESTION,
        logprobs=True,
        top_logprobs=2,
        options={"temperature": 0, "num_predict": 8},
    )
    assert reply.logprobs and len(reply.logprobs) == len(content)
    assert [e.token for e in reply.logprobs] == [e.token for e in content]
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        oa.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True, top_logprobs=50)
