"""With API keys: the page asks for a key, a wrong one is refused, and each key sees only its
own chats (another key's chat id answers 404)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import UiPage, start_ui_daemon
from tests.browser.test_history import chat
from tests.conftest import Daemon
from tests.server.test_auth import add_key


@pytest.fixture(scope="module")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The models first (creating needs no key yet), then two keys."""
    d = start_ui_daemon(tmp_path_factory.mktemp("ui-keys"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def keys(ui_daemon: Daemon) -> dict[str, str]:
    return {name: add_key(ui_daemon, name) for name in ("alice", "bob")}


def test_a_wrong_key_is_refused(ui: UiPage, keys: dict[str, str]) -> None:
    ui.problems.allowed.append("401 (Unauthorized)")
    ui.page.goto(ui.url)
    expect(ui.page.locator("#signin")).to_be_visible()
    ui.page.fill("#signin-key", "not-a-key")
    ui.page.click("#signin-form button")
    expect(ui.page.locator("#signin-error")).to_have_text("That key is not valid.")


def test_each_key_sees_only_its_own_chats(
    ui: UiPage, keys: dict[str, str], browser: Browser
) -> None:
    ui.problems.allowed.append("404 (Not Found)")  # bob asking for alice's chat, below
    page = ui.sign_in(keys["alice"])
    expect(page.locator("#user")).to_have_text("alice")
    chat(page, "alice's secret plans")
    expect(page.locator("#chats li")).to_have_count(1)
    alice_chats = page.evaluate(
        "fetch('/ui/api/chats', {credentials: 'same-origin'}).then(r => r.json())"
    )["chats"]
    chat_id = alice_chats[0]["id"]

    context = browser.new_context()
    try:
        other = UiPage(context.new_page(), ui.daemon, ui.problems)
        bob = other.sign_in(keys["bob"])
        expect(bob.locator("#user")).to_have_text("bob")
        expect(bob.locator("#chats li")).to_have_count(0)
        status = bob.evaluate(
            f"fetch('/ui/api/chats/{chat_id}', {{credentials: 'same-origin'}}).then(r => r.status)"
        )
        assert status == 404
        # the sign-out ends bob's session: the page asks for a key again
        bob.click("#signout")
        expect(bob.locator("#signin")).to_be_visible()
    finally:
        context.close()
