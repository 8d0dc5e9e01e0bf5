"""The `olla` command: thin click commands that talk to the daemon through `olla.client`."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from olla import __version__
from olla.cli_keys import keys_group
from olla.cli_run import run_cmd
from olla.client import Client, file_digest
from olla.config import SETTINGS, Settings, load_settings
from olla.errors import DaemonUnavailable, OllaError
from olla.progress import PullProgress
from olla.registry.create_request import request_from_modelfile
from olla.registry.modelfile import parse as parse_modelfile
from olla.registry.names import ModelName
from olla.show_text import print_table
from olla.units import format_ago, format_size, format_until

T = TypeVar("T")


@dataclass
class CliState:
    """What every command needs: the settings (for OLLA_HOST)."""

    settings: Settings

    def client(self) -> Client:
        """A client of the daemon at OLLA_HOST."""
        # OLLA_API_KEY is the caller's secret, not a daemon setting: read here, sent as a bearer
        return Client(self.settings.host, api_key=os.environ.get("OLLA_API_KEY") or None)


def run_async(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body; turn olla errors into a one-line message and exit 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except OllaError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def client(state: CliState) -> Client:
    return state.client()


pass_state = click.make_pass_decorator(CliState)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="olla")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """olla: run large language models locally."""
    try:
        ctx.obj = CliState(load_settings())
    except OllaError as exc:
        raise click.ClickException(str(exc)) from None


def _setting_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for spec in reversed(SETTINGS):
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.help} [env {spec.env}; default {spec.default_text}]"
        if spec.name == "debug":
            fn = click.option(flag, is_flag=True, default=None, help=help_text)(fn)
        elif spec.name == "ui":  # on by default: the flag that matters is --no-ui
            fn = click.option(f"{flag}/--no-ui", spec.name, default=None, help=help_text)(fn)
        else:
            fn = click.option(flag, spec.name, default=None, help=help_text)(fn)
    return fn


@cli.command("serve")
@_setting_options
def serve_cmd(**flags: Any) -> None:
    """Start the olla daemon in the foreground (stop it with Ctrl-C or SIGTERM)."""
    from olla.logs import setup_logging
    from olla.server.app import serve

    try:
        settings = load_settings(flags)
        setup_logging(settings.debug)
        asyncio.run(serve(settings))
    except OllaError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("create")
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "modelfile",
    default="Modelfile",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Modelfile to build from",
)
@click.option(
    "-q", "--quantize", default=None, help="quantize an F16/F32 model, e.g. q4_K_M or q8_0"
)
@pass_state
@run_async
async def create_cmd(state: CliState, name: str, modelfile: Path, quantize: str | None) -> None:
    """Create a model NAME from a Modelfile."""
    try:
        text = modelfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {modelfile}: {exc.strerror}") from None
    parsed = _parse_modelfile_or_exit(modelfile, text)
    uploads: list[tuple[Path, str]] = []

    def upload(path: Path) -> str:
        click.echo(f"hashing {path.name}", err=True)
        digest = file_digest(path)
        uploads.append((path, digest))
        return digest

    req = request_from_modelfile(ModelName.parse(name), parsed, modelfile.parent.absolute(), upload)
    req.quantize = quantize
    async with client(state) as c:
        for path, digest in uploads:
            if await c.upload_blob(path, digest):
                click.echo(f"copied {path.name} ({format_size(path.stat().st_size)})", err=True)
        async for line in c.create(req.to_json()):
            click.echo(line["status"])


def _parse_modelfile_or_exit(path: Path, text: str) -> Any:
    try:
        return parse_modelfile(text)
    except OllaError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


@cli.command("pull")
@click.argument("name")
@click.option("--insecure", is_flag=True, help="Allow plain http to a registry not on loopback.")
@pass_state
def pull_cmd(state: CliState, name: str, insecure: bool) -> None:
    """Pull a model: from Ollama's registry (llama3.2, someone/model:tag, host/ns/model:tag;
    OLLA_REGISTRY names a mirror) or Hugging Face (hf.co/{owner}/{repo}[:quant])."""
    try:
        run_async(_pull)(state, name, insecure)
    except KeyboardInterrupt:
        # the daemon stops the download once no client follows it; the partial file stays
        click.echo(f"\npull stopped; `olla pull {name}` goes on from what was downloaded", err=True)
        sys.exit(130)


async def _pull(state: CliState, name: str, insecure: bool) -> None:
    out = sys.stdout

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    progress = PullProgress(write=write, tty=out.isatty())
    try:
        async with client(state) as c:
            async for line in c.pull(name, insecure):
                progress.show(line)
    finally:
        progress.close()


@cli.command("push")
@click.argument("name")
def push_cmd(name: str) -> None:
    """Not supported: olla pulls (from Ollama's registry and Hugging Face) and does not push."""
    raise click.ClickException(
        "olla does not push models: it pulls from Ollama's registry and Hugging Face. To share "
        f"{name}, upload its GGUF to a Hugging Face repository (see `olla show --modelfile`)"
    )


@cli.command("list")
@pass_state
@run_async
async def list_cmd(state: CliState) -> None:
    """List the models in the store."""
    async with client(state) as c:
        models = await c.list_models()
    rows: list[tuple[str, ...]] = [("NAME", "ID", "SIZE", "MODIFIED")]
    now = time.time()
    for m in models:
        modified = _parse_time(m["modified_at"])
        rows.append(
            (m["name"], m["digest"][:12], format_size(m["size"]), format_ago(now - modified))
        )
    print_table(rows)


cli.add_command(list_cmd, "ls")


@cli.command("ps")
@click.option("-v", "--verbose", is_flag=True, help="Show estimated and allocated memory")
@pass_state
@run_async
async def ps_cmd(state: CliState, verbose: bool) -> None:
    """List the models loaded now."""
    async with client(state) as c:
        models = await c.running()
    rows: list[tuple[str, ...]] = [("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")]
    now = time.time()
    for m in models:
        until = _parse_time(m["expires_at"]) - now
        rows.append(
            (
                m["name"],
                m["digest"][:12],
                format_size(m["size"]),
                _processor(m),
                str(m.get("context_length", "")),
                "Forever" if until > 100 * 31557600 else format_until(max(until, 0)),
            )
        )
    print_table(rows)
    if verbose:
        for m in models:
            _print_memory(m["name"], m.get("memory") or {})
            placement = m.get("placement")
            if placement and placement.get("gpu_layers"):
                click.echo(
                    f"  layers on GPU {placement['gpu']}: "
                    f"{placement['gpu_layers']} of {placement['layers']}"
                )


def _print_memory(name: str, memory: dict[str, Any]) -> None:
    """Estimate and allocation side by side, by llama.cpp buffer."""
    parts = ("weights", "kv_cache", "compute", "output", "total")
    rows: list[tuple[str, ...]] = [(name, "WEIGHTS", "KV CACHE", "COMPUTE", "OUTPUT", "TOTAL")]
    for label in ("estimate", "actual"):
        sizes = memory.get(label)
        if sizes:
            rows.append((f"  {label}", *(format_size(int(sizes.get(k, 0))) for k in parts)))
    estimate, actual = memory.get("estimate"), memory.get("actual")
    click.echo()
    print_table(rows)
    if estimate and actual and actual.get("total"):
        click.echo(f"  estimate / actual: {estimate['total'] / actual['total']:.3f}")
    if actual and actual.get("repacked"):
        click.echo(f"  repacked copies of mapped weights (CPU): {format_size(actual['repacked'])}")


def _processor(model: dict[str, Any]) -> str:
    """Where the model sits: "100% CPU", "100% GPU" or "35%/65% CPU/GPU"."""
    placement = model.get("placement") or {}
    if placement.get("layers") and placement.get("gpu_layers") == placement["layers"]:
        return "100% GPU"  # every layer; the input embeddings stay in RAM, as in llama.cpp
    size, vram = model.get("size") or 0, model.get("size_vram") or 0
    if not size or vram <= 0:
        return "100% CPU"
    gpu = round(100 * min(vram, size) / size)
    return "100% GPU" if gpu == 100 else f"{100 - gpu}%/{gpu}% CPU/GPU"


@cli.command("stop")
@click.argument("name")
@pass_state
@run_async
async def stop_cmd(state: CliState, name: str) -> None:
    """Unload a running model."""
    async with client(state) as c:
        loaded = {m["name"] for m in await c.running()}
        full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        if name not in loaded and full not in loaded:
            raise click.ClickException(f'couldn\'t find model "{name}" to stop')
        await c.unload(name)


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@cli.command("show")
@click.argument("name")
@click.option("--modelfile", "part", flag_value="modelfile", help="Show the Modelfile")
@click.option("--parameters", "part", flag_value="parameters", help="Show the parameters")
@click.option("--template", "part", flag_value="template", help="Show the template")
@click.option("--system", "part", flag_value="system", help="Show the system message")
@click.option("--license", "part", flag_value="license", help="Show the license")
@click.option("-v", "--verbose", is_flag=True, help="Show all model metadata")
@pass_state
@run_async
async def show_cmd(state: CliState, name: str, part: str | None, verbose: bool) -> None:
    """Show information about model NAME."""
    async with client(state) as c:
        info = await c.show(name, verbose=verbose)
    if part:
        click.echo(info.get(part, "").rstrip("\n"))
        return
    from olla.show_text import render_show

    click.echo(render_show(info, verbose))


@cli.command("cp")
@click.argument("source")
@click.argument("destination")
@pass_state
@run_async
async def cp_cmd(state: CliState, source: str, destination: str) -> None:
    """Copy model SOURCE to DESTINATION (the files are shared, not duplicated)."""
    async with client(state) as c:
        await c.copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@cli.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_state
@run_async
async def rm_cmd(state: CliState, names: tuple[str, ...]) -> None:
    """Remove one or more models, and the files no other model uses."""
    failed = 0
    async with client(state) as c:
        for name in names:
            try:
                await c.delete(name)
                click.echo(f"deleted '{name}'")
            except DaemonUnavailable:
                raise
            except OllaError as exc:
                click.echo(f"Error: {exc}", err=True)
                failed += 1
    if failed:
        sys.exit(1)


cli.add_command(run_cmd)
cli.add_command(keys_group)


def main() -> None:
    """Entry point of the `olla` console script."""
    cli(prog_name="olla")
