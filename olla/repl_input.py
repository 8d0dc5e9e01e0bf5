"""The chat's input at a terminal: lines and `\"\"\"` blocks read through readline, the history
file (`/set nohistory` stops adding to it), Ctrl-L, which clears the screen, and Ctrl-C, which
stops an answer but not the chat.

The prompt is read on the event loop's thread (blocking it: nothing else runs meanwhile) so
that readline gets Ctrl-C as KeyboardInterrupt; work for the daemon runs as a task that a
SIGINT handler of the loop cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

PROMPT, CONTINUATION, QUOTES = ">>> ", "... ", '"""'
HISTORY_LENGTH = 1000
EXIT_HINT = "Use Ctrl + d or /bye to exit."


def read_input(read: Callable[[str], str]) -> tuple[str, bool]:
    """One input: a line, or a block from `\"\"\"` to a line ending with `\"\"\"`.

    Returns the text (quotes removed, lines joined by newlines) and whether it is a literal
    message, never a command. `/set system \"\"\"` opens a block too.
    """
    line = read(PROMPT)
    opener = next((o for o in (QUOTES, "/set system " + QUOTES) if line.startswith(o)), None)
    if opener is None:
        return line, False
    lines: list[str] = []
    rest = line[len(opener) :]
    while not rest.endswith(QUOTES):
        lines.append(rest)
        rest = read(CONTINUATION)
    lines.append(rest[: -len(QUOTES)])
    return opener[: -len(QUOTES)] + "\n".join(lines).strip("\n"), opener == QUOTES


def open_history() -> Path | None:
    """Load `~/.olla/history` into readline; None (no saved history) when it is unusable."""
    try:
        import readline
    except ImportError:  # a Python built without readline: plain input()
        return None
    readline.set_history_length(HISTORY_LENGTH)
    try:
        path = Path.home() / ".olla" / "history"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            readline.read_history_file(path)
    except (OSError, RuntimeError):  # no home, or one we may not write
        return None
    return path


def keep_history(on: bool) -> None:
    """Whether the lines typed from now on join the history (and so its file), as Ollama's
    `/set history` and `/set nohistory`; lines kept earlier stay."""
    try:
        import readline
    except ImportError:
        return
    readline.set_auto_history(on)


def bind_keys() -> None:
    """Ctrl-L clears the screen, as in Ollama's chat. GNU readline binds it so by default, but
    an inputrc may not; macOS's Python uses libedit, whose commands are named otherwise."""
    try:
        import readline
    except ImportError:
        return
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^L ed-clear-screen")
    else:
        readline.parse_and_bind(r'"\C-l": clear-screen')


def save_history(path: Path | None) -> None:
    if path is None:
        return
    import readline

    try:
        readline.write_history_file(path)
    except OSError:
        pass


async def interruptible(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` as a task that Ctrl-C cancels (closing its stream) instead of ending olla."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals: Ctrl-C ends olla
        loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        await task
    except asyncio.CancelledError:
        if not interrupted:
            raise
        click.echo()
    finally:
        with contextlib.suppress(NotImplementedError):  # puts back the KeyboardInterrupt handler
            loop.remove_signal_handler(signal.SIGINT)
        await asyncio.sleep(0)  # let closed connections really close before input() blocks


def interrupted_at_prompt() -> None:
    """Ctrl-C at the prompt: drop the line; on an empty one, say how to leave."""
    try:
        import readline

        typed = readline.get_line_buffer()
    except ImportError:
        typed = ""
    click.echo("\n" + EXIT_HINT if not typed else "")
