"""Browser tests of the chat page: Debian's chromium driven by Playwright, against a real daemon
with the real SmolLM2. Playwright's own browser download cannot work here, so the browser is the
system's `chromium` (.ci/run installs it); if it is missing or cannot start, the tests fail.

Every page records console errors, uncaught exceptions and CSP violations; a test that leaves
any fails at teardown, so each test also checks that the page stayed clean.
"""

from __future__ import annotations

import itertools
import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)

from tests.conftest import MODELFILE, Daemon, make_daemon
from tests.daemon_helpers import create_model

# A TEMPLATE that writes the user's text three times: SmolLM2 then continues by copying it
# (greedy), which makes the real model "say" whatever a test sends (Markdown, XSS payloads)
# without a fake. Checked by test_the_echo_model_repeats_what_it_is_sent.
ECHO_TEMPLATE = """{{- range .Messages }}{{ .Content }}
{{ .Content }}
{{ .Content }}
{{ end }}"""

# greedy, and about one copy of a test's text (each answer takes seconds, not minutes)
ECHO_PARAMETERS = {"temperature": 0, "num_predict": 64}

# Chrome reports CSP violations on the console too; the listener makes them explicit
WATCH_CSP = """document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`));"""


def chromium_path() -> str:
    """The system chromium; the tests fail (never skip) without it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a module, with smollm2:135m and `echo` (smollm2 under ECHO_TEMPLATE)."""
    d = make_daemon(tmp_path_factory.mktemp("ui"))
    d.start()
    create_model(d, "smollm2:135m", MODELFILE)
    # urllib, not aiohttp: Playwright's sync API runs an event loop in this thread
    body = {
        "model": "echo",
        "from": "smollm2:135m",
        "template": ECHO_TEMPLATE,
        "parameters": ECHO_PARAMETERS,
        "stream": False,
    }
    request = urllib.request.Request(f"{d.base_url}/api/create", json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
    yield d
    d.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # --no-sandbox: CI and this machine run as root, where chromium's sandbox refuses to start
    b = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    yield b
    b.close()


@dataclass
class PageProblems:
    """What went wrong in a page: console errors (CSP violations among them) and exceptions."""

    errors: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def exception(self, error: Exception) -> None:
        self.errors.append(f"exception: {error}")


@dataclass
class UiPage:
    """A browser page on the daemon's /ui/, and the problems it has logged so far."""

    page: Page
    daemon: Daemon
    problems: PageProblems

    @property
    def url(self) -> str:
        return f"{self.daemon.base_url}/ui/"

    def open(self) -> Page:
        self.page.goto(self.url)
        self.page.wait_for_selector("#app:not([hidden])", timeout=15_000)
        # the picker is filled from /api/tags once the page has started. (Locators, not
        # wait_for_function: its polling evaluates a string, which the page's CSP forbids.)
        expect(self.page.locator("#model option")).not_to_have_count(0)
        return self.page


@pytest.fixture
def ui(browser: Browser, ui_daemon: Daemon) -> Iterator[UiPage]:
    """A fresh browser context (no cookies) on the page; fails at teardown if the page logged
    a console error, an uncaught exception or a CSP violation."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.add_init_script(WATCH_CSP)
    serve_page_from_disk(context)
    page = context.new_page()
    problems = PageProblems()
    page.on("console", problems.console)
    page.on("pageerror", problems.exception)
    yield UiPage(page, ui_daemon, problems)
    context.close()
    assert problems.errors == []


def screenshot_path() -> Path:
    """Where the README's screenshot goes."""
    return Path(__file__).resolve().parents[2] / "docs" / "images" / "ui.png"


# --- Until the uiserver and uihistory branches land, the daemon does not serve /ui/: the page's
# files come from disk, with the contract's CSP, and the session and history routes from this
# stand-in. Remove it (and its call in `ui`) once they are merged.
UI = Path(__file__).resolve().parents[2] / "olla" / "ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
}


def serve_page_from_disk(context: BrowserContext) -> None:
    chats: dict[str, dict[str, object]] = {}
    ids = itertools.count(1)

    def page_file(route: Route) -> None:
        path = route.request.url.split("/ui/", 1)[1].split("?")[0] or "index.html"
        file = (UI / path).resolve()
        if UI not in file.parents or not file.is_file():
            route.fulfill(status=404, body="not found")
            return
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
        route.fulfill(
            body=file.read_bytes(),
            headers=headers,
            content_type=TYPES.get(file.suffix, "application/octet-stream"),
        )

    def session(route: Route) -> None:
        route.fulfill(json={"user": "local", "admin": True, "keys": False})

    def history(route: Route) -> None:
        method, url = route.request.method, route.request.url.split("?")[0]
        tail = url.split("/ui/api/chats", 1)[1].strip("/")
        if not tail and method == "GET":
            listed = [{k: c[k] for k in ("id", "title", "model")} for c in chats.values()]
            route.fulfill(json={"chats": listed[::-1]})
        elif not tail and method == "POST":
            chat_id = str(next(ids))
            chats[chat_id] = {"id": chat_id, **json.loads(route.request.post_data or "{}")}
            route.fulfill(status=201, json={"id": chat_id})
        elif tail in chats and method == "GET":
            route.fulfill(json=chats[tail])
        elif tail in chats and method == "PUT":
            chats[tail].update(json.loads(route.request.post_data or "{}"))
            route.fulfill(json=chats[tail])
        elif tail in chats and method == "DELETE":
            del chats[tail]
            route.fulfill(status=204)
        else:
            route.fulfill(status=404, json={"error": "chat not found"})

    context.route("**/ui/api/session", session)
    context.route("**/ui/api/chats**", history)
    context.route(lambda url: "/ui/" in url and "/ui/api/" not in url, page_file)
