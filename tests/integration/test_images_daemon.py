"""Images sent to a real daemon serving the text-only SmolLM2: a 400 on every route that takes
them, in each API's error shape and through the official clients, before the model loads; a
malformed image field is a 400 too. (Answers from a model with a projector come with the
runner's side of issue 28.)"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from PIL import Image as PILImage

from tests.conftest import MODELFILE, Daemon, make_daemon

MODEL = "smollm2:135m"
REFUSAL = f"{MODEL} does not support vision: it reads no images"


def png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), "teal").save(buffer, "PNG")
    return buffer.getvalue()


PNG = base64.b64encode(png()).decode()
DATA_URL = f"data:image/png;base64,{PNG}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("images"))
    d.start()
    created = subprocess.run(
        [sys.executable, "-m", "olla", "create", MODEL, "-f", str(MODELFILE)],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    yield d
    d.stop()


def post(d: Daemon, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = httpx.post(d.base_url + path, json=body, timeout=60)
    return response.status_code, response.json()


def message_of(path: str, body: Any) -> str:
    """The error's message in the route's API shape."""
    if path.startswith("/v1/messages"):
        assert body["type"] == "error"
        return str(body["error"]["message"])
    if path.startswith("/v1/"):
        return str(body["error"]["message"])
    return str(body["error"])


USER_IMAGE: dict[str, Any] = {"role": "user", "content": "What is this?", "images": [PNG]}
OPENAI_PARTS = [
    {"type": "text", "text": "What is this?"},
    {"type": "image_url", "image_url": {"url": DATA_URL}},
]
ANTHROPIC_BLOCK = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
}
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/api/generate", {"prompt": "What is this?", "images": [PNG], "stream": False}),
    ("/api/generate", {"prompt": "[img-0] What is this?", "images": [PNG], "raw": True}),
    ("/api/chat", {"messages": [USER_IMAGE]}),
    ("/api/chat", {"messages": [{**USER_IMAGE, "content": "Is [img] blue?"}], "stream": False}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": OPENAI_PARTS}]}),
    (
        "/v1/messages",
        {"max_tokens": 8, "messages": [{"role": "user", "content": [ANTHROPIC_BLOCK]}]},
    ),
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": [ANTHROPIC_BLOCK]}]}),
    (
        "/v1/responses",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": DATA_URL}]}]},
    ),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_images_to_a_text_only_model_are_a_400_on_every_route(
    served: Daemon, path: str, body: dict[str, Any]
) -> None:
    status, answer = post(served, path, {"model": MODEL, **body})
    assert status == 400
    assert message_of(path, answer).startswith(REFUSAL)


def test_the_refusal_comes_before_the_model_loads(served: Daemon) -> None:
    post(served, "/api/chat", {"model": MODEL, "messages": [USER_IMAGE]})
    assert httpx.get(served.base_url + "/api/ps", timeout=10).json()["models"] == []


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/api/generate", {"prompt": "x", "images": PNG}, "images must be a list of base64"),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x", "images": [3]}]},
            "messages[0].images[0]",
        ),
        ("/api/generate", {"prompt": "x", "suffix": "y", "images": [PNG]}, "suffix"),
        (
            "/v1/chat/completions",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}
                        ],
                    }
                ]
            },
            "olla fetches no image URLs",
        ),
    ],
)
def test_a_malformed_image_field_is_a_400_naming_it(
    served: Daemon, path: str, body: dict[str, Any], says: str
) -> None:
    status, answer = post(served, path, {"model": MODEL, **body})
    assert status == 400
    assert says in message_of(path, answer)


def test_the_official_ollama_client_gets_the_refusal(served: Daemon) -> None:
    client = ollama.Client(host=served.base_url)
    with pytest.raises(ollama.ResponseError) as chat:
        client.chat(
            MODEL, messages=[{"role": "user", "content": "What is this?", "images": [png()]}]
        )
    assert chat.value.status_code == 400 and REFUSAL in chat.value.error
    with pytest.raises(ollama.ResponseError) as generate:
        client.generate(MODEL, "What is this?", images=[png()])
    assert generate.value.status_code == 400 and REFUSAL in generate.value.error


def test_the_official_openai_client_gets_the_refusal(served: Daemon) -> None:
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": OPENAI_PARTS}],  # type: ignore[list-item]
        )
    assert REFUSAL in refused.value.message
    with pytest.raises(openai.BadRequestError) as responses:
        client.responses.create(
            model=MODEL,
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": DATA_URL, "detail": "auto"}],
                }
            ],
        )
    assert REFUSAL in responses.value.message


def test_the_official_anthropic_client_gets_the_refusal(served: Daemon) -> None:
    client = anthropic.Anthropic(base_url=served.base_url, api_key="unused")
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [ANTHROPIC_BLOCK]}],  # type: ignore[list-item]
        )
    assert REFUSAL in refused.value.message
