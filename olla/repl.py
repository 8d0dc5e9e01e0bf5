"""`olla run`: a one-shot answer or an interactive chat, through the daemon's /api/chat."""

from __future__ import annotations

import sys
from typing import Any

import click

from olla.client import Client

_HELP = """Available commands:
  /clear          forget the conversation so far
  /bye            exit (also Ctrl-D)
  /?, /help       this help
"""


async def _answer(c: Client, model: str, messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    async for line in c.chat({"model": model, "messages": messages}):
        piece = line.get("message", {}).get("content", "")
        if piece:
            parts.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


async def chat_once(c: Client, model: str, prompt: str) -> None:
    """Print the model's answer to one prompt."""
    async with c:
        await _answer(c, model, [{"role": "user", "content": prompt}])


async def repl(c: Client, model: str) -> None:
    """Read prompts until /bye or end of input; the conversation is kept between turns."""
    import asyncio

    messages: list[dict[str, Any]] = []
    async with c:
        await c.show(model)  # fail fast on an unknown model, before the first prompt
        while True:
            try:
                text = await asyncio.to_thread(input, ">>> ")
            except EOFError:
                click.echo()
                return
            command = text.strip()
            if command in ("/bye", "/exit"):
                return
            if command in ("/?", "/help"):
                click.echo(_HELP)
                continue
            if command == "/clear":
                messages.clear()
                click.echo("Cleared session context")
                continue
            if not command:
                continue
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": await _answer(c, model, messages)})
