"""The gate with images: refused for a model without vision, else checked and sent to the runner
in the order of their tags, and only those of the messages truncation keeps. The gate's own code
over a stand-in store and runner (the `capabilities` seam makes a model read images)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from olla.config import Settings
from olla.errors import InvalidRequest
from olla.images import Image, with_images
from olla.registry.capabilities import VISION, Capabilities
from olla.registry.facts import ModelFacts
from olla.registry.manifests import ModelConfig
from olla.registry.names import ModelName
from olla.registry.store import ResolvedModel
from olla.runtime.prompting import model_capabilities
from olla.server.gate import ChatPrompt, Gate, GenerationRequest, RawPrompt
from olla.server.metrics import Metrics
from olla.server.user_limits import UserLimits
from olla.templates import ChatMessage
from olla.wire.messages import Done, Event, Submit

TEMPLATE = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}"
IMAGE_TOKENS = 100  # what the stand-in runner counts for an image's tag


def png(color: str) -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


RED, BLUE, GREEN = png("red"), png("blue"), png("green")


class Entry:
    name = ModelName.parse("seer")


class Store:
    """The registry's two calls the gate makes."""

    def __init__(self) -> None:
        self.model = ResolvedModel(Entry(), Path("/models/seer"), ModelConfig(), template=TEMPLATE)  # type: ignore[arg-type]
        self.facts = self

    def resolve(self, name: ModelName) -> ResolvedModel:
        return self.model

    def get(self, path: Path) -> ModelFacts:
        return ModelFacts()


@dataclass
class Runner:
    """Records each Submit; counts words, and each image tag as IMAGE_TOKENS."""

    submits: list[Submit] = field(default_factory=list)

    def generate(self, submit: Submit, client: int | None = None) -> AsyncGenerator[Event, None]:
        self.submits.append(submit)

        async def events() -> AsyncGenerator[Event, None]:
            yield Done(0, "stop")

        return events()

    async def count(self, texts: list[str]) -> list[int]:
        tags = [len(re.findall(r"\[img-\d+\]", t)) for t in texts]
        words = [len(re.sub(r"\[img-\d+\]", " ", t).replace(">", "> ").split()) for t in texts]
        return [w + n * IMAGE_TOKENS for w, n in zip(words, tags, strict=True)]


@dataclass
class Lease:
    runner: Runner
    num_ctx: int
    load_seconds: float = 0.0

    @property
    def model(self) -> Any:
        return type("Loaded", (), {"key": type("Key", (), {"num_ctx": self.num_ctx})()})()

    async def release(self) -> None:
        pass


@dataclass
class Manager:
    runner: Runner
    num_ctx: int = 4096

    async def acquire(self, model: ResolvedModel, options: Any, keep_alive: Any) -> Lease:
        return Lease(self.runner, self.num_ctx)


def sees(model: ResolvedModel, facts: ModelFacts, template: str | None) -> Capabilities:
    """The model's capabilities, and vision (what a projector layer gives it)."""
    found = model_capabilities(model, facts, template)
    return replace(found, names=(*found.names, VISION))


def gate(runner: Runner, vision: bool = True, num_ctx: int = 4096) -> Gate:
    return Gate(
        Settings(),
        Store(),  # type: ignore[arg-type]
        Manager(runner, num_ctx),  # type: ignore[arg-type]
        UserLimits(0, 0),
        Metrics(),
        sees if vision else model_capabilities,
    )


def ask(the_gate: Gate, prompt: ChatPrompt | RawPrompt) -> dict[str, Any]:
    """Run a request through the gate to its end; what its log line would tell."""
    info: dict[str, Any] = {}

    async def run() -> None:
        request = GenerationRequest(ModelName.parse("seer"), prompt)
        async with the_gate.generation(request, info) as admitted:
            async for _ in admitted.events:
                pass

    asyncio.run(run())
    return info


def user(text: str, *images: str) -> ChatMessage:
    return with_images(
        {"role": "user", "content": text}, [Image(d, f"i{i}") for i, d in enumerate(images)]
    )


def test_images_go_to_the_runner_in_the_order_of_their_tags() -> None:
    runner = Runner()
    chat = (
        user("what is this?", RED, BLUE),
        {"role": "assistant", "content": "two"},
        user("[img] too?", GREEN),
    )
    info = ask(gate(runner), ChatPrompt(chat))
    [submit] = runner.submits
    assert submit.prompt == "<user>[img-0][img-1]what is this?<assistant>two<user>[img-2] too?"
    assert submit.images == (RED, BLUE, GREEN)
    assert info["images"] == 3


def test_a_raw_prompt_sends_its_images_as_it_places_them() -> None:
    runner = Runner()
    ask(
        gate(runner),
        RawPrompt("<u>[img] and [img]</u>", (Image(RED, "images[0]"), Image(BLUE, "images[1]"))),
    )
    [submit] = runner.submits
    assert (submit.prompt, submit.images) == ("<u>[img-0] and [img-1]</u>", (RED, BLUE))


def test_a_model_without_vision_refuses_images_before_it_loads() -> None:
    runner = Runner()
    with pytest.raises(InvalidRequest) as refused:
        ask(gate(runner, vision=False), ChatPrompt((user("hi", RED),)))
    assert str(refused.value).startswith("seer:latest does not support vision: it reads no images")
    assert runner.submits == []


def test_a_bad_image_is_a_400_that_names_it() -> None:
    runner = Runner()
    bad = with_images(
        {"role": "user", "content": "x"}, [Image("bm90IGFuIGltYWdl", "messages[0].images[0]")]
    )
    with pytest.raises(InvalidRequest, match=r"^messages\[0\]\.images\[0\] is not an image file"):
        ask(gate(runner), ChatPrompt((bad,)))
    assert runner.submits == []


def test_truncation_sends_only_the_kept_images_numbered_from_zero() -> None:
    runner = Runner()
    answer = {"role": "assistant", "content": "w " * 20}
    chat = (
        user("old", RED),
        answer,
        user("older question " * 50),
        answer,
        user("new", BLUE, GREEN),
    )
    info = ask(gate(runner, num_ctx=400), ChatPrompt(chat))  # room for 300: two images and text
    [submit] = runner.submits
    assert info["messages_dropped"] == 4 and info["images"] == 3
    assert submit.prompt == "<user>[img-0][img-1]new"
    assert submit.images == (BLUE, GREEN)
