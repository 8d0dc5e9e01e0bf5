"""`olla run`: its flags parsed into `RunOptions`, then `olla.run_model` does the rest."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

import click

from olla.answer import THINK_VALUES
from olla.client import Client
from olla.errors import OllaError
from olla.run_options import Format, RunOptions, check_keep_alive, parse_format

T = TypeVar("T")


class CliState(Protocol):
    """What `olla run` needs of the CLI's state (olla.cli.CliState)."""

    def client(self) -> Client: ...


class _RunCommand(click.Command):
    """`olla run`'s parsing: a bare `--think` means true and never takes the next word as its
    value (only `--think=VALUE` gives one), as `ollama run --think "question"` reads."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        args = [a if a != "--think" or i > end else "--think=true" for i, a in enumerate(args)]
        return super().parse_args(ctx, args)


@click.command("run", cls=_RunCommand)
@click.argument("name")
@click.argument("prompt", nargs=-1)
@click.option(
    "--think",
    type=click.Choice(list(THINK_VALUES), case_sensitive=False),
    is_flag=False,
    flag_value="true",
    metavar="[=true|false|low|medium|high]",
    help="Think before answering (--think), or not (--think=false), or think at a level, "
    "for models that take one. Without it, a model that can think does.",
)
@click.option("--hidethinking", is_flag=True, help="Think, but do not print the reasoning.")
@click.option("--verbose", is_flag=True, help="Show timings after each answer.")
@click.option(
    "--format",
    "answer_format",
    metavar="json",
    callback=lambda ctx, param, value: _run_value(parse_format, value),
    help="Answer in JSON (or by a JSON schema).",
)
@click.option(
    "--keepalive",
    metavar="DURATION",
    callback=lambda ctx, param, value: _run_value(check_keep_alive, value),
    help="Keep the model loaded this long after an answer (5m, 1h30m; -1: forever).",
)
@click.option("--nowordwrap", is_flag=True, help="Do not wrap answers at word boundaries.")
@click.option("--insecure", is_flag=True, help="Pull from a registry over plain http if needed.")
@click.pass_obj
def run_cmd(
    state: CliState,
    name: str,
    prompt: tuple[str, ...],
    think: str | None,
    hidethinking: bool,
    verbose: bool,
    answer_format: Format | None,
    keepalive: str | None,
    nowordwrap: bool,
    insecure: bool,
) -> None:
    """Chat with model NAME (pulled first if missing): answer PROMPT (after what stdin pipes in),
    or start an interactive chat without one."""
    from olla.run_model import prompt_text, run_model

    value = None if think is None else THINK_VALUES[think.lower()]
    opts = RunOptions(value, hidethinking, verbose, answer_format, keepalive, not nowordwrap)
    try:
        piped = None if sys.stdin.isatty() else sys.stdin.read()
        asyncio.run(run_model(state.client(), name, prompt_text(prompt, piped), opts, insecure))
    except OllaError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C during a pull or a one-shot answer
        click.echo(err=True)
        sys.exit(130)


def _run_value(parse: Callable[[str], T], value: str | None) -> T | None:
    """An `olla run` flag's value parsed, or a usage error that says what it takes."""
    try:
        return None if value is None else parse(value)
    except OllaError as exc:
        raise click.BadParameter(str(exc)) from None
