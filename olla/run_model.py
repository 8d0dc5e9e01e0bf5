"""`olla run MODEL [PROMPT]` as `ollama run` goes: the model's /api/show, or a pull when the
daemon does not have it (404), with `olla pull`'s progress on stderr; then an embedding model's
vector for the input, one answer to a prompt, or the chat (`olla.repl`).

The prompt is the arguments joined by spaces; text piped on stdin comes first, joined to them by
one space as Ollama joins them (`echo notes | olla run m "Sum up:"` asks "notes\\n Sum up:").
Paths to image files in it go as images to a model that reads them (`olla.prompt_images`).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click

from olla.answer import print_answer, terminal_printer
from olla.client import Client
from olla.errors import InvalidRequest, NotFound, OllaError
from olla.progress import PullProgress
from olla.prompt_images import attach_images, has_vision
from olla.run_options import RunOptions
from olla.run_stats import summary, vector_line

COMPLETION, EMBEDDING = "completion", "embedding"  # as /api/show lists capabilities


def prompt_text(arguments: tuple[str, ...], piped: str | None) -> str:
    """The prompt from the arguments and what was piped on stdin (None: stdin is a terminal)."""
    parts = list(arguments)
    if piped:
        parts.insert(0, piped)
    return " ".join(parts)


async def run_model(c: Client, model: str, prompt: str, opts: RunOptions, insecure: bool) -> None:
    """Run `model` as `olla run` does: pulled first if missing, then embed, answer or chat."""
    from olla.repl import repl

    async with c:
        info = await show_or_pull(c, model, insecure)
        if is_embedding(info):
            await print_embedding(c, model, prompt, opts)
        elif prompt:
            await answer_once(c, model, prompt, opts, has_vision(info))
        else:
            await repl(c, model, info, opts)


async def show_or_pull(c: Client, model: str, insecure: bool = False) -> dict[str, Any]:
    """The model's /api/show; a model the daemon does not have is pulled first."""
    try:
        return await c.show(model)
    except NotFound:
        pass
    await pull_with_progress(c, model, insecure, sys.stderr)
    return await c.show(model)


async def pull_with_progress(c: Client, model: str, insecure: bool, out: TextIO) -> None:
    """Pull `model`, showing `olla pull`'s progress (bars on a terminal) on `out`."""

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    progress = PullProgress(write=write, tty=out.isatty())
    try:
        async for line in c.pull(model, insecure=insecure):
            progress.show(line)
    finally:
        progress.close()


def is_embedding(info: dict[str, Any]) -> bool:
    """Whether the model only embeds (it cannot complete), by its /api/show capabilities."""
    capabilities = info.get("capabilities") or []
    return EMBEDDING in capabilities and COMPLETION not in capabilities


async def print_embedding(c: Client, model: str, text: str, opts: RunOptions) -> None:
    """Print the vector of `text` on one line, as `ollama run` does for an embedding model."""
    if not text:
        raise InvalidRequest(
            f'embedding models require input text. Usage: olla run {model} "your text here"'
        )
    body: dict[str, Any] = {"model": model, "input": text}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    vectors = (await c.embed(body)).get("embeddings") or []
    if not vectors:
        raise OllaError("no embeddings returned")
    click.echo(vector_line(vectors[0]))


async def answer_once(
    c: Client, model: str, prompt: str, opts: RunOptions, vision: bool = False
) -> None:
    """Print the model's answer to one prompt, and the timings after it with `verbose`;
    image paths in the prompt go as images to a model that reads them (`vision`)."""
    text, images = attach_images(prompt, vision, model)
    message: dict[str, Any] = {"role": "user", "content": text}
    if images:
        message["images"] = images
    body = opts.apply({"model": model, "messages": [message]})
    printer = terminal_printer(opts.hide_thinking, opts.word_wrap)
    answer = await print_answer(c.chat(body), printer, end="\n")
    if opts.verbose:
        click.echo(summary(answer.stats), err=True, nl=False)
