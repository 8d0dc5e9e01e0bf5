"""`olla run`'s interactive chat, like `ollama run`'s, via /api/chat.

The chat reads lines through `readline` (history in `~/.olla/history`, kept only when that file
can be written), shows `>>> ` (`... ` inside a `\"\"\"` block) and streams each answer as it
arrives, its reasoning apart (`olla.answer`). Commands start with `/`; `/?` lists them. `/set`
values belong to the session: they outlive `/clear` and `/load`, go out with every request and
(parameters and the system message, as with Ollama) into `/save`. The command's flags
(`olla.run_options`) are the session's first values: `/set verbose|quiet`,
`/set format json|noformat`, `/set wordwrap|nowordwrap`, `/set think|nothink` change them.
An answer's reasoning stays in the conversation with it and goes back with the next request,
as Ollama's CLI sends it. Paths to image files in a question go as its images to a model that
reads them (`olla.prompt_images`), and stay with the question in the conversation; a file that
cannot be read is an error and the question is not sent.

Ctrl-C while the daemon answers closes the stream (the daemon then cancels the sequence) and
returns to the prompt. The interrupted turn is dropped as a whole: neither the question nor
the partial answer stays in the conversation, so the next question is asked as if the
interrupted one had never been sent. Ctrl-C at the prompt abandons the line (and an open
`\"\"\"` block); Ctrl-D or `/bye` ends the chat (`olla.repl_input`).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import click

from olla.answer import LEVELS, THINKING, print_answer, terminal_printer, terminal_wrap
from olla.chat import ParamValue, coerce_parameter
from olla.client import Client
from olla.errors import InvalidRequest, OllaError
from olla.prompt_images import attach_images, has_vision, starts_with_image_path
from olla.registry.modelfile import format_parameters
from olla.repl_input import (
    PROMPT,
    bind_keys,
    interrupted_at_prompt,
    interruptible,
    keep_history,
    open_history,
    read_input,
    save_history,
)
from olla.run_options import RunOptions
from olla.run_stats import summary

HELP = """Available commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a model (forgets the conversation)
  /save <model>   Save your current session as a new model
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
HELP_SET = """Available commands:
  /set parameter <name> <value>   Set a parameter for the following answers
  /set system <string>            Set the system message (\"\"\" for several lines)
  /set history                    Keep what you type in the history file
  /set nohistory                  Stop keeping it there
  /set wordwrap                   Wrap answers at word boundaries
  /set nowordwrap                 Do not wrap answers
  /set format json                Answer in JSON
  /set noformat                   Answer in free text
  /set verbose                    Show timings after each answer
  /set quiet                      Do not show timings
  /set think [low|medium|high]    Think before answering (at a level, if the model takes one)
  /set nothink                    Answer without thinking
"""
HELP_PARAMETERS = """Available parameters (the most common ones):
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from the top k tokens
  /set parameter top_p <float>          Pick tokens by the sum of their probabilities
  /set parameter min_p <float>          Pick tokens above min_p * the top token's probability
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set the creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    How far back to look for repetitions
  /set parameter stop <string> ...      Set the stop strings
"""
HELP_SHOW = """Available commands:
  /show info         Show details for this model
  /show license      Show the model's license
  /show modelfile    Show the Modelfile for this model
  /show parameters   Show the model's and the session's parameters
  /show system       Show the system message
  /show template     Show the prompt template
"""
HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Ctrl + k            Delete the text after the cursor
  Ctrl + u            Delete the text before the cursor
  Ctrl + w            Delete the word before the cursor
  Ctrl + r            Search the history
  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from answering
  Ctrl + d            Exit (/bye)
"""

Message = dict[str, Any]  # role and content; a question's images


@dataclass
class Session:
    """What the chat remembers: the model, session settings and the conversation."""

    client: Client
    model: str
    options: dict[str, ParamValue] = field(default_factory=dict)
    system: str | None = None
    loaded: list[Message] = field(default_factory=list)  # the model's own MESSAGEs
    history: list[Message] = field(default_factory=list)
    opts: RunOptions = field(default_factory=RunOptions)
    vision: bool = False  # whether the model reads images
    done: bool = False


def _print_messages(messages: list[Message], word_wrap: bool) -> None:
    """Show a model's stored conversation the way it would have looked when typed, its answers
    wrapped as answers are."""
    for m in messages:
        if m.get("role") == "user":
            click.echo(PROMPT + m.get("content", ""))
        elif m.get("role") == "assistant":
            wrap, content = terminal_wrap(word_wrap), m.get("content", "")
            click.echo((wrap.feed(content) + wrap.flush() if wrap else content) + "\n")


def chat_request(s: Session, question: Message) -> dict[str, Any]:
    """The /api/chat body that asks `question` after the conversation, with the session's
    system message, parameters, `think`, `format` and `keep_alive`."""
    system = [{"role": "system", "content": s.system}] if s.system is not None else []
    body: dict[str, Any] = {"model": s.model, "messages": [*system, *s.history, question]}
    if s.options:
        body["options"] = s.options
    return s.opts.apply(body)


async def _turn(s: Session, text: str) -> None:
    """Ask one question; the turn joins the conversation only once the answer is complete."""
    content, images = attach_images(text, s.vision, s.model)
    user: Message = {"role": "user", "content": content}
    if images:
        user["images"] = images
    lines = s.client.chat(chat_request(s, user))
    printer = terminal_printer(s.opts.hide_thinking, s.opts.word_wrap)
    answer = await print_answer(lines, printer, end="\n\n")
    s.history += [user, answer.message()]
    if s.opts.verbose:
        click.echo(summary(answer.stats), err=True, nl=False)


async def _set(s: Session, args: list[str], text: str) -> None:
    """`/set parameter NAME VALUE...`, `/set system TEXT`, a mode (`/set verbose`...),
    `/set format json`, `/set think [LEVEL]`, `/set nothink`."""
    if not args:
        click.echo(HELP_SET)
    elif args[0] in _MODES:
        _MODES[args[0]](s)
        click.echo(f"Set '{args[0]}' mode.")
    elif args[0] in ("format", "noformat"):
        _set_format(s, args)
    elif args[0] == "parameter":
        _set_parameter(s, args[1:])
    elif args[0] == "system" and len(args) > 1:
        s.system = text.split(None, 2)[2]  # as typed, inner spaces and newlines included
        click.echo("Set system message.")
    elif args[0] == "system":
        click.echo(HELP_SET)
    elif args[0] in ("think", "nothink"):
        await _set_think(s, args[0], args[1:])
    else:
        click.echo(f"Unknown command '/set {args[0]}'. Type /? for help")


def _history(on: bool) -> Callable[[Session], None]:
    return lambda s: keep_history(on)


def _setter(name: str, value: bool) -> Callable[[Session], None]:
    return lambda s: setattr(s.opts, name, value)


# `/set MODE`: what each does; each answers "Set 'MODE' mode."
_MODES: dict[str, Callable[[Session], None]] = {
    "verbose": _setter("verbose", True),
    "quiet": _setter("verbose", False),
    "wordwrap": _setter("word_wrap", True),
    "nowordwrap": _setter("word_wrap", False),
    "history": _history(True),
    "nohistory": _history(False),
}


def _set_format(s: Session, args: list[str]) -> None:
    """`/set format json` or `/set noformat`, with Ollama's messages."""
    if args[0] == "noformat":
        s.opts.format = None
        click.echo("Disabled format.")
    elif len(args) < 2 or args[1] != "json":
        click.echo("Invalid or missing format. For 'json' mode use '/set format json'")
    else:
        s.opts.format = "json"
        click.echo("Set format to 'json' mode.")


async def _set_think(s: Session, mode: str, args: list[str]) -> None:
    """`/set think [LEVEL]` or `/set nothink`, with a warning for a model that cannot think."""
    level = args[0].lower() if args and mode == "think" else ""
    if level and level not in LEVELS:
        click.echo(f"Couldn't set 'think': the level must be low, medium or high, not '{args[0]}'")
        return
    s.opts.think = (level or True) if mode == "think" else False
    with contextlib.suppress(OllaError):  # only a warning: the daemon has the last word
        if THINKING not in (await s.client.show(s.model)).get("capabilities", []):
            click.echo(f'warning: model "{s.model}" does not support thinking output', err=True)
    click.echo(f"Set 'think' mode to '{level}'." if level else f"Set '{mode}' mode.")


def _set_parameter(s: Session, args: list[str]) -> None:
    if len(args) < 2:
        click.echo(HELP_PARAMETERS)
        return
    name, values = args[0].lower(), args[1:]
    try:
        s.options[name] = coerce_parameter(name, values if name == "stop" else " ".join(values))
    except OllaError as exc:
        click.echo(f"Couldn't set parameter: {exc}")
        return
    click.echo(f"Set parameter '{name}' to '{', '.join(values)}'")


def _show_parameters(s: Session, info: dict[str, Any]) -> str:
    model_params = info.get("parameters", "").splitlines()
    lines = ["Model defined parameters:"] + (
        [f"  {line}" for line in model_params]
        or ["  No additional parameters were specified for this model."]
    )
    if s.options:
        user_params = format_parameters(s.options).splitlines()
        lines += ["", "User defined parameters:"] + [f"  {line}" for line in user_params]
    return "\n".join(lines) + "\n"


def _show_info(s: Session, info: dict[str, Any]) -> str:
    from olla.show_text import render_show

    return render_show(info)


_SHOW: dict[str, Callable[[Session, dict[str, Any]], str]] = {
    "info": _show_info,
    "license": lambda s, info: info.get("license") or "No license was specified for this model.",
    "modelfile": lambda s, info: info.get("modelfile", ""),
    "parameters": _show_parameters,
    "system": lambda s, info: (
        s.system or info.get("system") or "No system message was specified for this model."
    ),
    "template": lambda s, info: (
        info.get("template") or "No prompt template was specified for this model."
    ),
}


async def _show(s: Session, args: list[str], text: str) -> None:
    """`/show info|license|modelfile|parameters|system|template`."""
    if not args:
        click.echo(HELP_SHOW)
    elif args[0] not in _SHOW:
        click.echo(f"Unknown command '/show {args[0]}'. Type /? for help")
    else:
        click.echo(_SHOW[args[0]](s, await s.client.show(s.model)).rstrip("\n"))


async def _clear(s: Session, args: list[str], text: str) -> None:
    """Forget the conversation; the session's system message and parameters stay."""
    s.history.clear()
    click.echo("Cleared session context")


async def _save(s: Session, args: list[str], text: str) -> None:
    """Create model `args[0]` from the current one plus the session's settings and messages."""
    if len(args) != 1:
        click.echo("Usage:\n  /save <modelname>")
        return
    body: dict[str, Any] = {"model": args[0], "from": s.model}
    if s.system is not None:
        body["system"] = s.system
    if s.options:
        body["parameters"] = s.options
    if s.loaded or s.history:
        # the store keeps a message's role and content: images would only weigh on the body
        body["messages"] = [
            {k: v for k, v in m.items() if k != "images"} for m in s.loaded + s.history
        ]
    async for _ in s.client.create(body):
        pass
    click.echo(f"Created new model '{args[0]}'")


async def _load(s: Session, args: list[str], text: str) -> None:
    """Switch to model `args[0]` (it must exist) and forget the conversation."""
    if len(args) != 1:
        click.echo("Usage:\n  /load <modelname>")
        return
    click.echo(f"Loading model '{args[0]}'")
    info = await s.client.show(args[0])
    s.model, s.loaded, s.history = args[0], list(info.get("messages", [])), []
    s.vision = has_vision(info)
    _print_messages(s.loaded, s.opts.word_wrap)


async def _bye(s: Session, args: list[str], text: str) -> None:
    s.done = True


async def _help(s: Session, args: list[str], text: str) -> None:
    topic = args[0].lstrip("/") if args else ""
    topics = {"set": HELP_SET, "show": HELP_SHOW, "shortcut": HELP_SHORTCUTS}
    click.echo(topics.get(topic.removesuffix("s"), HELP))


Command = Callable[[Session, list[str], str], Awaitable[None]]
COMMANDS: dict[str, Command] = {
    "/set": _set,
    "/show": _show,
    "/load": _load,
    "/save": _save,
    "/clear": _clear,
    "/bye": _bye,
    "/exit": _bye,
    "/?": _help,
    "/help": _help,
}


async def _handle(s: Session, text: str, literal: bool) -> None:
    """Run a `/command`, or ask `text` (always, when it came from a quoted block)."""
    words = text.split()
    if not literal and words and words[0].startswith("/") and not starts_with_image_path(text):
        command = COMMANDS.get(words[0])
        if command is None:
            click.echo(f"Unknown command '{words[0]}'. Type /? for help")
        else:
            await command(s, words[1:], text)
    elif text.strip():
        await _turn(s, text)


async def repl(c: Client, model: str, info: dict[str, Any], opts: RunOptions) -> None:
    """Chat with `model` (`info`: its /api/show) until /bye or Ctrl-D; the conversation is kept
    between turns. `c` is open; `opts` are the command's flags, which /set changes."""
    # fail fast, before the first prompt, on a model that cannot think
    if opts.think and THINKING not in info.get("capabilities", []):
        raise InvalidRequest(f'"{model}" does not support thinking; run it without --think')
    s = Session(c, model, loaded=list(info.get("messages", [])), opts=opts, vision=has_vision(info))
    _print_messages(s.loaded, s.opts.word_wrap)
    history = open_history()
    bind_keys()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        await _loop(s)
    finally:
        signal.signal(signal.SIGINT, previous)
        save_history(history)


async def _loop(s: Session) -> None:
    while not s.done:
        try:
            text, literal = read_input(input)
            await interruptible(_handle(s, text, literal))
        except EOFError:  # Ctrl-D
            click.echo()
            return
        except KeyboardInterrupt:
            interrupted_at_prompt()
        except OllaError as exc:
            click.echo(f"Error: {exc}", err=True)
        except aiohttp.ClientError as exc:
            click.echo(f"Error: lost the connection to olla ({exc.__class__.__name__})", err=True)
