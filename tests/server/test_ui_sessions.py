"""The web page's pieces as units: the session store, the cross-site request rule, which routes
are open, and which static paths resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.server.api_keys import ApiKey
from olla.server.auth import is_open, user_may
from olla.server.ui_page import content_type, static_path
from olla.server.ui_sessions import IDLE_LIMIT, SessionStore, sends_ui_header

ALICE = ApiKey("alice", "a" * 64, "admin", 0.0)
BOB = ApiKey("bob", "b" * 64, "user", 0.0)
KEYS = {"alice": ALICE, "bob": BOB}


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_stands_for_its_key_until_it_ends() -> None:
    store = SessionStore(clock=Clock())
    alice, bob = store.create(ALICE), store.create(BOB)
    assert alice != bob and len(alice) >= 43  # 32 random bytes, urlsafe base64
    assert store.find(alice, KEYS) == ALICE
    assert store.find(bob, KEYS) == BOB
    assert store.find("made-up", KEYS) is None
    store.end(alice)
    assert store.find(alice, KEYS) is None
    assert store.find(bob, KEYS) == BOB
    store.end(alice)  # twice: nothing to end, no error


def test_a_session_ends_after_a_week_idle_and_use_extends_it() -> None:
    clock = Clock()
    store = SessionStore(clock=clock)
    token = store.create(ALICE)
    clock.now += IDLE_LIMIT - 1
    assert store.find(token, KEYS) == ALICE  # used: a week more from now
    clock.now += IDLE_LIMIT - 1
    assert store.find(token, KEYS) == ALICE
    clock.now += IDLE_LIMIT + 1
    assert store.find(token, KEYS) is None
    assert len(store) == 0


def test_a_revoked_or_replaced_key_ends_its_sessions() -> None:
    store = SessionStore(clock=Clock())
    alice, bob = store.create(ALICE), store.create(BOB)
    assert store.find(alice, {"bob": BOB}) is None  # alice revoked
    assert store.find(alice, KEYS) is None  # and it stays ended when a key comes back
    # bob revoked and made again under the same name: a new key, not this session's
    replaced = {"bob": ApiKey("bob", "c" * 64, "admin", 1.0)}
    assert store.find(bob, replaced) is None
    assert len(store) == 0


def test_past_the_cap_the_least_recently_used_session_ends() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, max_sessions=2)
    first = store.create(ALICE)
    clock.now += 1
    second = store.create(BOB)
    clock.now += 1
    assert store.find(first, KEYS) == ALICE  # first is now the more recent
    clock.now += 1
    third = store.create(ALICE)
    assert len(store) == 2
    assert store.find(second, KEYS) is None
    assert store.find(first, KEYS) == ALICE and store.find(third, KEYS) == ALICE


@pytest.mark.parametrize(
    ("method", "headers", "passes"),
    [
        ("GET", {}, True),
        ("HEAD", {}, True),
        ("get", {}, True),
        ("POST", {}, False),
        ("DELETE", {}, False),
        ("PUT", {}, False),
        ("OPTIONS", {}, False),
        ("POST", {"X-Olla-UI": "1"}, True),
        ("DELETE", {"X-Olla-UI": " 1 "}, True),
        ("POST", {"X-Olla-UI": "0"}, False),
        ("POST", {"X-Olla-UI": "true"}, False),
        ("POST", {"X-Olla-UI": ""}, False),
    ],
)
def test_a_cookie_changes_state_only_with_the_ui_header(
    method: str, headers: dict[str, str], passes: bool
) -> None:
    assert sends_ui_header(method, headers) is passes


@pytest.mark.parametrize(
    ("method", "path", "opened"),
    [
        ("GET", "/", True),
        ("GET", "/api/version", True),
        ("GET", "/ui", True),
        ("GET", "/ui/", True),
        ("HEAD", "/ui/", True),
        ("GET", "/ui/static/app.js", True),
        ("GET", "/ui/static/vendor/marked.js", True),
        ("POST", "/ui/static/app.js", False),
        ("POST", "/ui/api/session", True),
        ("DELETE", "/ui/api/session", True),
        ("GET", "/ui/api/session", False),  # who is signed in: needs the session
        ("GET", "/ui/api/chats", False),
        ("GET", "/ui/index.html", False),
        ("GET", "/api/tags", False),
    ],
)
def test_the_page_and_signing_in_are_open(method: str, path: str, opened: bool) -> None:
    assert is_open(method, path) is opened


def test_a_read_only_key_may_use_the_pages_own_routes() -> None:
    assert user_may("GET", "/ui/api/chats")
    assert user_may("DELETE", "/ui/api/chats/1")
    assert not user_may("DELETE", "/api/delete")
    assert not user_may("POST", "/api/pull")


def test_static_paths_stay_inside_static(tmp_path: Path) -> None:
    static = tmp_path / "ui" / "static"
    (static / "vendor").mkdir(parents=True)
    (static / "app.js").write_text("export {};")
    (static / "vendor" / "marked.js").write_text("")
    (tmp_path / "ui" / "index.html").write_text("<!doctype html>")
    (tmp_path / "secret.txt").write_text("no")
    (static / "link.txt").symlink_to(tmp_path / "secret.txt")
    root = tmp_path / "ui"
    assert static_path(root, "app.js") == (static / "app.js").resolve()
    assert static_path(root, "vendor/marked.js") == (static / "vendor" / "marked.js").resolve()
    for bad in (
        "",
        "vendor",
        "vendor/",
        "../index.html",
        "../../secret.txt",
        "link.txt",
        "/etc/passwd",
        "nope.js",
        "app.js\x00.png",
    ):
        assert static_path(root, bad) is None, bad


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("LICENSE.txt", "text/plain; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
        ("logo.png", "image/png"),
        ("blob", "application/octet-stream"),
    ],
)
def test_scripts_and_styles_get_types_a_nosniff_browser_runs(name: str, expected: str) -> None:
    assert content_type(Path(name)) == expected
