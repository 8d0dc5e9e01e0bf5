"""Model management on the page: an admin's page has the Models dialog (pull with progress,
delete with a confirmation); a read-only key's page has none of it, and the daemon refuses that
key's session a delete all the same (403)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import UiPage, start_ui_daemon
from tests.conftest import Daemon
from tests.server.test_auth import add_key

THROWAWAY = "throwaway:latest"  # a copy the delete test removes, so the other models stay


@pytest.fixture(scope="module")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The models and a throwaway copy first (no key needed yet), then the keys."""
    d = start_ui_daemon(tmp_path_factory.mktemp("ui-admin"))
    body = json.dumps({"source": "smollm2:135m", "destination": THROWAWAY}).encode()
    with urllib.request.urlopen(f"{d.base_url}/api/copy", body, timeout=30) as response:
        assert response.status == 200
    yield d
    d.stop()


@pytest.fixture(scope="module")
def keys(ui_daemon: Daemon) -> dict[str, str]:
    return {
        "root": add_key(ui_daemon, "root"),
        "reader": add_key(ui_daemon, "reader", "--read-only"),
    }


def picker(page: Page) -> list[str]:
    return page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")


def test_an_admin_deletes_a_model_after_confirming_and_it_leaves_the_picker(
    ui: UiPage, keys: dict[str, str]
) -> None:
    page = ui.sign_in(keys["root"])
    assert THROWAWAY in picker(page)
    page.select_option("#model", THROWAWAY)
    page.click("#manage-models")
    expect(page.locator("#models-dialog")).to_be_visible()
    row = page.locator(f"#model-list li[data-model='{THROWAWAY}']")
    row.locator("button:text('Delete')").click()
    expect(row).to_contain_text(f"Delete {THROWAWAY}?")
    assert THROWAWAY in picker(page)  # asking deleted nothing
    row.locator("button:text('Yes, delete')").click()
    expect(page.locator("#pull-status")).to_have_text(f"Deleted {THROWAWAY}.")
    expect(row).to_have_count(0)
    assert sorted(picker(page)) == ["echo:latest", "smollm2:135m", "thinker:latest"]
    # the chosen model went away: the picker moved to one that exists
    assert page.locator("#model").input_value() in picker(page)
    expect(page.locator("#pull-error")).to_have_text("")


def test_a_pull_of_an_unknown_name_shows_the_daemons_error(
    ui: UiPage, keys: dict[str, str]
) -> None:
    page = ui.sign_in(keys["root"])
    page.click("#manage-models")
    page.fill("#pull-name", "no-such-model")
    page.click("#pull")
    error = page.locator("#pull-error")
    # the daemon's own words (the test daemon's OLLA_REGISTRY is a closed port)
    expect(error).to_contain_text(
        "Pull of no-such-model failed: cannot reach the registry at http://127.0.0.1:9",
        timeout=30_000,
    )
    expect(page.locator("#pull")).to_be_enabled()
    assert page.locator("#pull-progress").is_hidden()
    assert sorted(picker(page)) == ["echo:latest", "smollm2:135m", "thinker:latest"]
    # how a line that counts bytes reads (no registry here to stream a real one)
    line = "{status: 'pulling 1a2b', completed: 50000000, total: 200000000}"
    text = page.evaluate(f"import('/ui/static/admin.js').then(m => m.progressText({line}))")
    assert text == "pulling 1a2b: 50.0 MB of 200.0 MB (25%)"


def test_a_read_only_key_has_no_models_dialog_and_cannot_delete(
    ui: UiPage, keys: dict[str, str]
) -> None:
    ui.problems.allowed.append("403 (Forbidden)")  # the delete tried below
    page = ui.sign_in(keys["reader"])
    expect(page.locator("#user")).to_have_text("reader")
    expect(page.locator("#manage-models")).to_have_count(0)
    expect(page.locator("#models-dialog")).to_have_count(0)
    status = page.evaluate(
        """fetch('/api/delete', {method: 'DELETE', credentials: 'same-origin',
            headers: {'X-Olla-UI': '1', 'Content-Type': 'application/json'},
            body: JSON.stringify({model: 'echo:latest'})}).then(r => r.status)"""
    )
    assert status == 403
    page.reload()
    ui.ready()
    assert "echo:latest" in picker(page)
