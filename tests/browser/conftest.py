"""Browser tests of the chat page: Debian's chromium driven by Playwright, against a real daemon
with the real SmolLM2. Playwright's own browser download cannot work here, so the browser is the
system's `chromium` (.ci/run installs it); if it is missing or cannot start, the tests fail.

Every page records console errors, uncaught exceptions and CSP violations; a test that leaves
any fails at teardown, so each test also checks that the page stayed clean.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Response,
    expect,
    sync_playwright,
)

from tests.conftest import MODELFILE, Daemon, make_daemon
from tests.daemon_helpers import create_model
from tests.integration.test_thinking import THINKER

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


def start_ui_daemon(tmp: Path) -> Daemon:
    """A started daemon with smollm2:135m, `echo` (smollm2 under ECHO_TEMPLATE) and `thinker`
    (smollm2 made a thinking model by tests/integration/test_thinking.py's TEMPLATE)."""
    d = make_daemon(tmp)
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
    create(d, body)
    create(d, {"model": "thinker", "from": "smollm2:135m", "template": THINKER, "stream": False})
    return d


def create(d: Daemon, body: dict[str, object]) -> None:
    """POST /api/create, which must succeed."""
    request = urllib.request.Request(f"{d.base_url}/api/create", json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon (no keys) for a module."""
    d = start_ui_daemon(tmp_path_factory.mktemp("ui"))
    yield d
    d.stop()


# Per module, not per session: while Playwright's sync API is started it leaves its event loop
# running in the main thread, and every later test that runs an event loop (pytest-asyncio, a
# CLI command's asyncio.run) failed with "cannot be called from a running event loop"
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # --no-sandbox: CI and this machine run as root, where chromium's sandbox refuses to start
    b = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    yield b
    b.close()


@dataclass
class PageProblems:
    """What went wrong in a page: console errors (CSP violations among them) and exceptions."""

    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # texts a test expects (a 401 before sign-in)
    failed: list[str] = field(default_factory=list)  # responses of 400 and above

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(a in message.text for a in self.allowed):
            self.errors.append(f"console: {message.text}")

    def exception(self, error: Exception) -> None:
        self.errors.append(f"exception: {error}")

    def response(self, response: Response) -> None:
        # the console's "Failed to load resource" names no URL: this says which one
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")


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
        return self.ready()

    def ready(self) -> Page:
        """Wait until the page has started: the app shown, the picker filled."""
        # body[data-ready] once the picker and the chats list are filled (locators, not
        # wait_for_function: its polling evaluates a string, which the page's CSP forbids)
        expect(self.page.locator("body[data-ready]")).to_have_count(1, timeout=15_000)
        expect(self.page.locator("#model option")).not_to_have_count(0)
        return self.page

    def sign_in(self, key: str) -> Page:
        """Open the page on a daemon with keys and sign in with `key` through the form."""
        # the browser logs the session check's 401 as a failed resource: expected here
        self.problems.allowed.append("401 (Unauthorized)")
        self.page.goto(self.url)
        self.page.fill("#signin-key", key)
        self.page.click("#signin-form button")
        return self.ready()  # the page reloads itself, signed in


@pytest.fixture
def ui(browser: Browser, ui_daemon: Daemon) -> Iterator[UiPage]:
    """A fresh browser context (no cookies) on the page; fails at teardown if the page logged
    a console error, an uncaught exception or a CSP violation."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    problems = PageProblems()
    page.on("console", problems.console)
    page.on("pageerror", problems.exception)
    page.on("response", problems.response)
    yield UiPage(page, ui_daemon, problems)
    context.close()
    assert problems.errors == [], problems.failed


def screenshot_path(tmp_path: Path) -> Path:
    """Where the screenshot goes: with OLLA_SCREENSHOT=1, the README's (docs/images/ui.png);
    else under the test's own directory, so a test run never edits a tracked file."""
    if os.environ.get("OLLA_SCREENSHOT") == "1":
        return Path(__file__).resolve().parents[2] / "docs" / "images" / "ui.png"
    return tmp_path / "ui.png"
