"""The one generation gate: every request that uses a model passes here, whatever its API.

A route turns its body into a frozen request value (`GenerationRequest` or `EmbedRequest`); the
gate resolves the model, renders the prompt with the model's template, and admits the request in
one order: the user's own limits (429 past them), then the model's queue (503 past it, while it
loads or waits for a free sequence), with the operator's num_predict cap and time limit, and
metrics on what comes back. What a route gets is the runner's events, to render in its API's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from aiohttp import web

from olla.chat import ThinkSetting
from olla.config import Settings
from olla.errors import InvalidRequest, RequestTimeout
from olla.images import Image, check_images, images_in, tag_raw
from olla.registry.capabilities import THINKING, VISION, Capabilities
from olla.registry.facts import ModelFacts
from olla.registry.names import ModelName
from olla.registry.store import Registry, ResolvedModel
from olla.runtime.manager import Lease, ModelManager
from olla.runtime.prompting import chat_prompt, insert_prompt, model_capabilities, model_path
from olla.server.metrics import Metrics
from olla.server.think import earlier_reasoning_dropped, reasoning_format, think_setting
from olla.server.truncation import Fitted, fit_chat, prompt_limit
from olla.server.user_limits import UserLimits
from olla.stream.reasoning import ReasoningFormat
from olla.templates import ChatMessage
from olla.units import format_duration
from olla.wire.messages import Direct, Embeddings, Event, Submit

Events = AsyncGenerator[Event, None]
CapabilitiesOf = Callable[[ResolvedModel, ModelFacts, "str | None"], Capabilities]


@dataclass(frozen=True)
class ChatPrompt:
    """Messages, rendered with the model's template after its own MESSAGEs."""

    messages: tuple[ChatMessage, ...]
    system: str | None = None  # None: the model's SYSTEM
    template: str | None = None  # None: the model's TEMPLATE, else its GGUF's chat template
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class InsertPrompt:
    """Fill-in-the-middle: the text before and after the gap."""

    prompt: str
    suffix: str
    system: str | None = None
    template: str | None = None


@dataclass(frozen=True)
class RawPrompt:
    """Text sent to the model as it is; it names where each image goes (`[img-i]`)."""

    text: str
    images: tuple[Image, ...] = ()


Prompt: TypeAlias = ChatPrompt | InsertPrompt | RawPrompt


@dataclass(frozen=True)
class DirectTarget:
    """A plain Ollama stream the runner writes into the client's socket itself."""

    client: int  # the socket's descriptor
    kind: str  # olla.stream.ollama.CHAT or GENERATE


@dataclass(frozen=True)
class GenerationRequest:
    """What any API asks of a model, once its body is parsed."""

    name: ModelName
    prompt: Prompt
    options: Mapping[str, Any] = field(default_factory=dict)  # over the model's parameters
    keep_alive: float | None = None  # seconds; None: the daemon's OLLA_KEEP_ALIVE
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema: a grammar
    context: tuple[int, ...] = ()  # /api/generate: the tokens of the conversation so far
    logprobs: int | None = None  # alternatives to report per token; None: off
    user: str = ""  # the API key's name, else the client's address
    direct: DirectTarget | None = None  # dropped when the answer needs the daemon to shape it
    think: bool | str | None = None  # Ollama's `think`: on, off, a level; None: the model's way
    truncate: bool = True  # drop the oldest messages (then tokens) of a prompt too long to fit
    shift: bool = True  # a generation that fills the context drops its older half and goes on
    # think asked of a model that cannot: the model's way, not a 400 (Ollama's relax_thinking
    # for Anthropic's clients, which ask every model to think)
    relax_think: bool = False

    @property
    def images(self) -> tuple[Image, ...]:
        """Every image the request sends, in the order of their tags."""
        if isinstance(self.prompt, ChatPrompt):
            return images_in(self.prompt.messages)
        return self.prompt.images if isinstance(self.prompt, RawPrompt) else ()


@dataclass(frozen=True)
class EmbedRequest:
    """Inputs to embed with a model."""

    name: ModelName
    inputs: tuple[str, ...]
    truncate: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    legacy: bool = False  # Ollama's older /api/embeddings: some models' vectors stay raw
    keep_alive: float | None = None
    user: str = ""


@dataclass(frozen=True)
class Admitted:
    """A generation under way: the runner's events, held until the gate's block ends."""

    model: ResolvedModel
    events: Events
    load_seconds: float  # what this request waited for its model to load
    direct: bool  # the runner writes the stream into the client's socket
    reasoning: ReasoningFormat | None = None  # how to tell the reasoning from the answer

    @property
    def name(self) -> str:
        return self.model.entry.name.display

    @property
    def load_ns(self) -> int:
        return int(self.load_seconds * 1e9)


@dataclass
class Gate:
    """Admission for generation and embedding requests; see the module's docstring."""

    settings: Settings
    registry: Registry
    manager: ModelManager
    user_limits: UserLimits
    metrics: Metrics
    # what a model can do, from its layers, facts and the template given (a seam for tests)
    capabilities: CapabilitiesOf = model_capabilities

    async def resolve(self, name: ModelName) -> ResolvedModel:
        """The model by name (404 if the store has no such model)."""
        return await asyncio.to_thread(self.registry.resolve, name)

    @contextlib.asynccontextmanager
    async def generation(
        self, request: GenerationRequest, info: dict[str, Any]
    ) -> AsyncIterator[Admitted]:
        """Admit `request` and hold its model for the block; `info` gets what the request's log
        line tells (model, tokens, time to first token)."""
        model = await self.resolve(request.name)
        options = self._capped({**model.parameters, **request.options})
        name = model.entry.name.display
        facts = await asyncio.to_thread(self.registry.facts.get, model_path(model))
        capabilities = self.capabilities(model, facts, _template(request.prompt))
        constrained = request.format is not None
        think = think_setting(_think_asked(request, capabilities), capabilities, name, constrained)
        images = await checked_images(request, capabilities, name, info)
        wanted = _cleaned(request.prompt, capabilities)
        prompt = self._render(model, facts, wanted, think)  # a bad template fails before loading
        async with self.user_limits.hold(request.user):
            lease = await self.manager.acquire(model, options, request.keep_alive)
            info["model"] = name
            try:
                if request.truncate and isinstance(wanted, ChatPrompt):
                    fitted = await _fitted(model, facts, wanted, think, prompt, lease, options)
                    prompt = fitted.prompt
                    if fitted.dropped:  # for the request's log line; their images went too
                        info["messages_dropped"] = fitted.dropped
                        images = images_in(fitted.kept)
                reasoning = reasoning_format(capabilities, think, prompt, constrained)
                # the runner writes plain lines: an answer to split is shaped here
                target = request.direct if reasoning is None else None
                direct = None if target is None else Direct(name, target.kind)
                submit = Submit(
                    prompt,
                    options,
                    request.format,
                    request.context,
                    request.logprobs,
                    request.user,
                    direct,
                    request.truncate,
                    request.shift,
                    tuple(image.data for image in images),  # image i is the prompt's [img-i]
                )
                events = lease.runner.generate(submit, target.client if target else None)
                events = self._within(events)
                events = self.metrics.observe_stream(events, name, info)
                yield Admitted(model, events, lease.load_seconds, direct is not None, reasoning)
            finally:
                await lease.release()  # the model's keep_alive starts when its last request ends

    async def load(
        self, name: ModelName, options: Mapping[str, Any], keep_alive: float | None
    ) -> tuple[str, str]:
        """An empty prompt: load the model (keep_alive 0: unload it); its name, and "load" or
        "unload"."""
        model = await self.resolve(name)
        if keep_alive == 0:
            await self.manager.unload(model)
            return model.entry.name.display, "unload"
        lease = await self.manager.acquire(model, {**model.parameters, **options}, keep_alive)
        await lease.release()
        return model.entry.name.display, "load"

    async def count(self, request: GenerationRequest, info: dict[str, Any]) -> int:
        """How many tokens `request`'s prompt is, rendered as `generation` renders it (before
        any truncation), counted by the model's runner under the same limits."""
        model = await self.resolve(request.name)
        name = model.entry.name.display
        facts = await asyncio.to_thread(self.registry.facts.get, model_path(model))
        capabilities = self.capabilities(model, facts, _template(request.prompt))
        asked = _think_asked(request, capabilities)
        think = think_setting(asked, capabilities, name, request.format is not None)
        await checked_images(request, capabilities, name, info)
        prompt = self._render(model, facts, _cleaned(request.prompt, capabilities), think)
        options = {**model.parameters, **request.options}
        async with self.user_limits.hold(request.user):
            lease = await self.manager.acquire(model, options, request.keep_alive)
            info["model"] = name
            try:
                [tokens] = await lease.runner.count([prompt])
            finally:
                await lease.release()
        info["tokens_in"] = tokens
        return tokens

    async def embed(self, request: EmbedRequest, info: dict[str, Any]) -> tuple[Embeddings, float]:
        """The embeddings of `request.inputs` (none: the model is only loaded), and the time
        the request waited for the model to load."""
        model = await self.resolve(request.name)
        options = {**model.parameters, **request.options}
        name = model.entry.name.display
        async with self.user_limits.hold(request.user):
            lease = await self.manager.acquire(model, options, request.keep_alive)
            info["model"] = name
            try:
                if not request.inputs:
                    return Embeddings(0, [], 0), lease.load_seconds
                normalize = not (request.legacy and await self._raw_legacy(model))
                call = lease.runner.embed(list(request.inputs), request.truncate, normalize)
                timeout = self.settings.request_timeout
                reply = await (asyncio.wait_for(call, timeout) if timeout > 0 else call)
            except asyncio.TimeoutError:
                raise self._timed_out() from None
            finally:
                await lease.release()
        self.metrics.tokens.labels(name, "prompt").inc(reply.prompt_eval_count)
        info["tokens_in"] = reply.prompt_eval_count
        return reply, lease.load_seconds

    async def _raw_legacy(self, model: ResolvedModel) -> bool:
        facts = await asyncio.to_thread(self.registry.facts.get, model_path(model))
        return facts.raw_legacy_embeddings

    def _render(
        self, model: ResolvedModel, facts: ModelFacts, prompt: Prompt, think: ThinkSetting
    ) -> str:
        if isinstance(prompt, RawPrompt):
            return tag_raw(prompt.text, prompt.images)
        if isinstance(prompt, InsertPrompt):
            p = prompt
            return insert_prompt(model, facts, p.prompt, p.suffix, p.system, p.template)
        tools = list(prompt.tools)
        return chat_prompt(
            model, facts, prompt.messages, prompt.system, prompt.template, tools, think
        )

    def _capped(self, options: dict[str, Any]) -> dict[str, Any]:
        """num_predict within the operator's ceiling (OLLA_MAX_PREDICT; 0: none); -1 is capped."""
        ceiling, asked = self.settings.max_predict, options.get("num_predict")
        if not ceiling or (asked is not None and 0 <= int(asked) <= ceiling):
            return options
        return {**options, "num_predict": ceiling}

    def _within(self, events: Events) -> Events:
        seconds = self.settings.request_timeout
        return events if seconds <= 0 else self._deadline(events, seconds)

    async def _deadline(self, events: Events, seconds: float) -> Events:
        """`events` until `seconds` have passed; then the generation is cancelled (504)."""
        deadline = time.monotonic() + seconds
        async with contextlib.aclosing(events):  # closing the runner's stream cancels it
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), deadline - time.monotonic())
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise self._timed_out() from None
                yield event

    def _timed_out(self) -> RequestTimeout:
        seconds = self.settings.request_timeout
        return RequestTimeout(
            f"the generation ran over {format_duration(seconds)} (OLLA_REQUEST_TIMEOUT) "
            "and was stopped; ask for fewer tokens (num_predict) or a longer limit"
        )


async def _fitted(
    model: ResolvedModel,
    facts: ModelFacts,
    chat: ChatPrompt,
    think: ThinkSetting,
    whole: str,
    lease: Lease,
    options: Mapping[str, Any],
) -> Fitted:
    """The chat's prompt (`whole`) without its oldest messages, the model's MESSAGEs first,
    where it does not fit the context the model was loaded with (olla.server.truncation)."""
    tools = list(chat.tools)

    def render(messages: Sequence[ChatMessage]) -> str:
        return chat_prompt(model, facts, messages, chat.system, chat.template, tools, think, False)

    async def count(text: str) -> int:
        return (await lease.runner.count([text]))[0]

    limit = prompt_limit(lease.model.key.num_ctx, options.get("num_predict"))
    return await fit_chat([*model.messages, *chat.messages], render, count, limit, whole)


async def checked_images(
    request: GenerationRequest, capabilities: Capabilities, name: str, info: dict[str, Any]
) -> tuple[Image, ...]:
    """The request's images, each checked (a 400 for a bad one, or for any image sent to a
    model that reads none)."""
    images = request.images
    if not images:
        return images
    info["images"] = len(images)  # for the request's log line
    if VISION not in capabilities:
        raise InvalidRequest(
            f"{name} does not support vision: it reads no images (it has no vision projector); "
            "send text only, or use a vision model"
        )
    await check_images(images)
    return images


def _think_asked(request: GenerationRequest, capabilities: Capabilities) -> bool | str | None:
    """The request's think, or None where it may be relaxed for a model that cannot think."""
    if request.relax_think and request.think and THINKING not in capabilities:
        return None
    return request.think


def _cleaned(prompt: Prompt, capabilities: Capabilities) -> Prompt:
    """A chat's earlier answers without the reasoning a client left in their content."""
    if not isinstance(prompt, ChatPrompt):
        return prompt
    return replace(prompt, messages=earlier_reasoning_dropped(prompt.messages, capabilities))


def _template(prompt: Prompt) -> str | None:
    """The template a request gives for its own prompt (None: the model's)."""
    return None if isinstance(prompt, RawPrompt) else prompt.template


GATE = web.AppKey("gate", Gate)
