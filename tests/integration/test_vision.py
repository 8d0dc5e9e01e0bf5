"""Images end to end: a model made of the real SmolLM2 GGUF and a synthetic projector
(scripts/synthetic_mmproj: SmolVLM-256M's SigLIP + idefics3 recipe, random weights, a shallow
encoder), served by a real daemon, asked through the official `ollama`, `openai` and
`anthropic` clients. Random weights test the mechanics only: an image reaches the model, the
answer follows from its pixels, a repeat is served from the caches, text streams beside it are
untouched. One daemon serves the whole module."""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import ollama
import openai
import pytest
from PIL import Image

from tests.conftest import Daemon, make_daemon

MODEL = "vision"
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 12}
QUESTION = "What is in this picture?"


def picture(
    color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (96, 64)
) -> bytes:
    """An image file: a plain colour with a stripe, so two colours differ in every tile."""
    image = Image.new("RGB", size, color)
    for x in range(size[0] // 3):
        image.putpixel((x, size[1] // 2), (255 - color[0], 255 - color[1], 255 - color[2]))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


RED, BLUE = picture((200, 20, 20)), picture((20, 40, 220))


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, smolvlm_mmproj: Path
) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("vision")
    d = make_daemon(root)
    d.start()
    modelfile = root / "Modelfile"
    modelfile.write_text(f"FROM {smollm2_gguf}\nFROM {smolvlm_mmproj}\n")
    for name, path in ((MODEL, modelfile),):
        created = subprocess.run(
            [sys.executable, "-m", "olla", "create", name, "-f", str(path)],
            env=d.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, created.stderr
    text_only = root / "Textfile"
    text_only.write_text(f"FROM {smollm2_gguf}\n")
    created = subprocess.run(
        [sys.executable, "-m", "olla", "create", "text", "-f", str(text_only)],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    yield d
    d.stop()


async def chat(d: Daemon, images: list[bytes], model: str = MODEL) -> tuple[int, dict[str, Any]]:
    """One non-streamed /api/chat turn with the images; (status, body)."""
    message = {
        "role": "user",
        "content": QUESTION,
        "images": [base64.b64encode(i).decode() for i in images],
    }
    body = {"model": model, "messages": [message], "options": GREEDY, "stream": False}
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post("/api/chat", json=body) as r:
            return r.status, await r.json()


async def test_the_model_shows_vision_and_its_projector(served: Daemon) -> None:
    shown = ollama.Client(host=served.base_url).show(MODEL)
    assert "vision" in (shown.capabilities or [])
    async with aiohttp.ClientSession(base_url=served.base_url) as s:  # the client lacks the field
        async with s.post("/api/show", json={"model": MODEL}) as r:
            info = (await r.json())["projector_info"]
    assert info["general.architecture"] == "clip"


def test_the_ollama_client_sends_images_and_gets_an_answer(served: Daemon) -> None:
    client = ollama.Client(host=served.base_url)
    answer = client.chat(
        MODEL,
        messages=[{"role": "user", "content": QUESTION, "images": [RED]}],
        options=GREEDY,
    )
    assert answer.message.content and answer.done_reason == "length"
    generated = client.generate(MODEL, QUESTION, images=[RED], options=GREEDY)
    assert generated.response and generated.eval_count == 12


def test_the_openai_client_sends_a_data_uri_and_gets_an_answer(served: Daemon) -> None:
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused")
    uri = "data:image/png;base64," + base64.b64encode(BLUE).decode()
    content: Any = [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": uri}},
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=12, temperature=0
    )
    assert answer.choices[0].message.content
    # the text, the image's tokens (2 chunks of 64) and the template: more than the text alone
    assert answer.usage is not None and answer.usage.prompt_tokens > 128


def test_the_anthropic_client_sends_an_image_block_and_gets_an_answer(served: Daemon) -> None:
    client = anthropic.Anthropic(base_url=served.base_url, api_key="unused")
    source: Any = {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(RED).decode(),
    }
    answer = client.messages.create(
        model=MODEL,
        max_tokens=12,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": source},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    assert answer.content and answer.usage.input_tokens > 128


async def test_the_same_image_gives_the_same_answer_and_another_image_another(
    served: Daemon,
) -> None:
    status, first = await chat(served, [RED])
    assert status == 200, first
    status, again = await chat(served, [RED])
    assert again["message"]["content"] == first["message"]["content"]
    status, other = await chat(served, [BLUE])
    assert other["message"]["content"] != first["message"]["content"]
    # the same image in another format is the same pixels: the same answer
    status, as_webp = await chat(served, [picture((200, 20, 20), "WEBP", (96, 64))])
    assert status == 200


def test_a_repeated_image_is_a_prefix_cache_hit(served: Daemon) -> None:
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused")
    uri = "data:image/png;base64," + base64.b64encode(picture((10, 200, 10))).decode()
    content: Any = [
        {"type": "image_url", "image_url": {"url": uri}},
        {"type": "text", "text": QUESTION},
    ]
    messages: Any = [{"role": "user", "content": content}]
    first = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0
    )
    second = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0
    )
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    # every full block short of the last token's: the image's 128 cells among them
    assert details.cached_tokens >= 128
    assert second.choices[0].message.content == first.choices[0].message.content


async def test_text_streams_beside_images_keep_their_tokens(served: Daemon) -> None:
    prompts = ["Tell me about the sea.", "Count to ten.", "Write a haiku about snow."]

    async def text(prompt: str) -> str:
        body = {"model": MODEL, "prompt": prompt, "options": {**GREEDY, "num_predict": 24}}
        body["stream"] = False
        async with aiohttp.ClientSession(base_url=served.base_url) as s:
            async with s.post("/api/generate", json=body) as r:
                return str((await r.json())["response"])

    alone = [await text(p) for p in prompts]
    together = await asyncio.gather(
        *(text(p) for p in prompts), chat(served, [BLUE]), chat(served, [picture((1, 2, 3))])
    )
    assert list(together[:3]) == alone
    assert all(status == 200 for status, _ in together[3:])


async def test_bad_images_are_400s_that_say_which(served: Daemon) -> None:
    status, body = await chat(served, [RED[:40]])  # a cut PNG
    assert status == 400 and "image" in body["error"]
    status, body = await chat(served, [RED], model="text")
    assert status == 400 and "image" in body["error"]
