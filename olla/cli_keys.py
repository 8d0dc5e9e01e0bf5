"""`olla keys`: the API keys a daemon checks, kept in OLLA_HOME (no daemon needed)."""

from __future__ import annotations

import time
from typing import Protocol

import click

from olla.config import Settings
from olla.errors import OllaError
from olla.server.api_keys import KeyStore
from olla.show_text import print_table
from olla.units import format_ago


class CliState(Protocol):
    """What the keys commands read of the CLI's state (olla.cli.CliState)."""

    settings: Settings


@click.group("keys")
def keys_group() -> None:
    """API keys: once one exists, every request needs one (Authorization: Bearer)."""


def _key_store(state: CliState) -> KeyStore:
    return KeyStore(state.settings.keys_file)


@keys_group.command("add")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="may generate, chat, embed and read; not change")
@click.pass_obj
def keys_add(state: CliState, name: str, read_only: bool) -> None:
    """Make a key called NAME and print it (it is shown this once, and stored only hashed)."""
    try:
        key = _key_store(state).add(name, "user" if read_only else "admin")
    except OllaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key)
    click.echo(
        f"key {name!r} added ({'read-only' if read_only else 'admin'}); it is not shown "
        "again: give it to its user (OLLA_API_KEY for the CLI)",
        err=True,
    )


@keys_group.command("list")
@click.pass_obj
def keys_list(state: CliState) -> None:
    """List the keys: name, role and when each was made (never the keys)."""
    rows: list[tuple[str, ...]] = [("NAME", "ROLE", "CREATED")]
    for key in sorted(_key_store(state).keys().values(), key=lambda k: k.created):
        role = "read-only" if key.role == "user" else key.role
        rows.append((key.name, role, format_ago(time.time() - key.created)))
    print_table(rows)


@keys_group.command("revoke")
@click.argument("name")
@click.pass_obj
def keys_revoke(state: CliState, name: str) -> None:
    """Revoke key NAME: the daemon refuses it from its next request."""
    try:
        _key_store(state).revoke(name)
    except OllaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {name}")
