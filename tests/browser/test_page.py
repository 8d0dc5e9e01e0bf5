"""The chat page in a real browser against a real daemon: it loads clean, lists the models,
streams an answer with its stats, stops, renders Markdown, and keeps a model's XSS inert.
(The `ui` fixture fails any test whose page logged a console error or CSP violation.)"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import UiPage, screenshot_path
from tests.conftest import wait_for

XSS = (
    '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> '
    '[click](javascript:window.pwned=3) <a href="javascript:window.pwned=4">a</a>'
)
LAST_ANSWER = "#messages .message.assistant >> nth=-1"
MARKDOWN = "**bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\n```"


def choose(page: Page, model: str, temperature: str | None = None) -> None:
    page.select_option("#model", model)
    if temperature is not None:
        page.click("#settings summary")
        page.fill("#temperature", temperature)
        page.dispatch_event("#temperature", "change")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_the_page_loads_clean_and_the_picker_lists_the_models(ui: UiPage) -> None:
    page = ui.open()
    names = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert sorted(names) == ["echo:latest", "smollm2:135m", "thinker:latest"]
    assert page.title() == "olla"
    # no keys: the local user is an admin, so the page manages models
    expect(page.locator("#manage-models")).to_be_visible()


def test_a_message_streams_an_answer_with_its_stats_line(ui: UiPage) -> None:
    page = ui.open()
    choose(page, "smollm2:135m", temperature="0")
    page.fill("#num-ctx", "2048")
    page.dispatch_event("#num-ctx", "change")
    send(page, "Name three colors.")
    answer = page.locator(LAST_ANSWER)
    expect(answer.locator(".stats")).to_be_visible(timeout=120_000)
    stats = answer.locator(".stats").inner_text()
    assert " tokens · " in stats and "tokens/s" in stats and "first token in" in stats
    assert answer.locator(".content").inner_text().strip()
    assert page.locator("#stop").is_hidden() and page.locator("#send").is_enabled()
    # the picker now marks the model as loaded (/api/ps)
    expect(page.locator("#model option[value='smollm2:135m']")).to_contain_text("loaded")


def test_stop_ends_the_stream_and_the_daemon_cancels_the_request(ui: UiPage) -> None:
    page = ui.open()
    choose(page, "smollm2:135m", temperature="1")
    send(page, "Write a very long story about a dragon who learns to cook.")
    streaming = page.locator("#messages .message.assistant:not(.pending) .content")
    expect(streaming).to_have_text(re.compile(r"\S.{20}", re.DOTALL), timeout=120_000)
    assert page.locator("#stop").is_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#stop")).to_be_hidden(timeout=10_000)
    # the partial answer stays, without stats (the stream never finished)
    answer = page.locator(LAST_ANSWER)
    assert answer.locator(".content").inner_text().strip()
    assert answer.locator(".stats").count() == 0
    wait_for(lambda: "POST /api/chat -> 499" in ui.daemon.log(), 10, "the daemon to log a 499")


def test_the_echo_model_repeats_what_it_is_sent(ui: UiPage) -> None:
    """The other tests' premise: through ECHO_TEMPLATE, the real model copies the user's text."""
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": XSS}],
        "stream": False,
    }
    request = urllib.request.Request(
        f"{ui.daemon.base_url}/api/chat", json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        content = json.loads(response.read())["message"]["content"]
    assert content.startswith(XSS)


def test_markdown_renders_with_tables_and_highlighted_code(ui: UiPage) -> None:
    page = ui.open()
    choose(page, "echo:latest")
    send(page, MARKDOWN)
    answer = page.locator(LAST_ANSWER)
    expect(answer.locator(".stats")).to_be_visible(timeout=120_000)
    content = answer.locator(".content")
    assert content.locator("strong").first.inner_text() == "bold"
    assert content.locator("table td").first.inner_text() == "1"
    assert content.locator("pre code.hljs").count() >= 1
    assert content.locator("pre button.copy").count() >= 1


def test_xss_in_the_models_output_stays_inert(ui: UiPage) -> None:
    page = ui.open()
    choose(page, "echo:latest")
    send(page, XSS)
    answer = page.locator(LAST_ANSWER)
    expect(answer.locator(".stats")).to_be_visible(timeout=120_000)
    content = answer.locator(".content")
    assert "onerror" in content.inner_text() or content.locator("a").count() > 0
    assert content.locator("img, script, [onerror]").count() == 0
    hrefs = content.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert not any(h and h.lower().startswith("javascript") for h in hrefs)
    for link in content.locator("a").all():
        link.click(modifiers=["Control"])  # even a click runs nothing
    assert page.evaluate("window.pwned") is None


def test_thinking_is_folded_with_how_long_it_took(ui: UiPage) -> None:
    page = ui.open()
    choose(page, "thinker:latest", temperature="0")
    send(page, "Why is the sky blue?")
    answer = page.locator(LAST_ANSWER)
    expect(answer.locator(".stats")).to_be_visible(timeout=120_000)
    thinking = answer.locator("details.thinking")
    expect(thinking.locator("summary")).to_have_text(re.compile(r"^Thought for \d+\.\d s$"))
    assert thinking.get_attribute("open") is None  # folded
    assert thinking.locator(".thinking-text").text_content().strip()
    assert "<think>" not in answer.locator(".content").inner_text()


def test_edit_and_regenerate_replace_the_answer(ui: UiPage) -> None:
    page = ui.open()
    choose(page, "echo:latest")
    send(page, "alpha beta")
    expect(page.locator(LAST_ANSWER).locator(".stats")).to_be_visible(timeout=120_000)
    page.click("#messages .message.assistant .actions button:text('Regenerate')")
    expect(page.locator("#messages .message")).to_have_count(2)
    expect(page.locator(LAST_ANSWER).locator(".stats")).to_be_visible(timeout=120_000)
    page.click("#messages .message.user .actions button:text('Edit')")
    page.fill("#messages .message.user textarea", "gamma delta")
    page.click("#messages .message.user button:text('Send')")
    expect(page.locator(LAST_ANSWER).locator(".stats")).to_be_visible(timeout=120_000)
    assert page.locator("#messages .message.user").inner_text().startswith("gamma delta")
    assert "gamma delta" in page.locator(LAST_ANSWER).inner_text()
    expect(page.locator("#messages .message")).to_have_count(2)


def test_the_theme_toggles_and_the_page_fits_a_phone(ui: UiPage) -> None:
    page = ui.open()
    before = page.evaluate("document.documentElement.dataset.theme")
    page.click("#theme")
    after = page.evaluate("document.documentElement.dataset.theme")
    assert {before, after} == {"light", "dark"}
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.locator("#sidebar").bounding_box()["x"] < 0  # folded away
    page.click("#toggle-sidebar")
    expect(page.locator("#sidebar")).to_have_class("sidebar open")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390


def test_a_screenshot_for_the_docs(ui: UiPage, tmp_path: Path) -> None:
    page = ui.open()
    choose(page, "smollm2:135m", temperature="0")
    send(page, "Write a Python function that adds two numbers.")
    expect(page.locator(LAST_ANSWER).locator(".stats")).to_be_visible(timeout=120_000)
    path = screenshot_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000


def test_busy_and_full_errors_say_when_to_try_again(ui: UiPage) -> None:
    page = ui.open()
    texts = page.evaluate(
        """async () => {
            const { ApiError, describe } = await import("/ui/static/api.js");
            const wait = (s) => (s === 507 ? null : 7);
            return [429, 503, 507].map((s) => describe(new ApiError(s, "why", wait(s))));
        }"""
    )
    assert texts[0].startswith("Too many requests") and "Try again in 7 s" in texts[0]
    assert texts[1].startswith("The server is busy") and "Try again in 7 s" in texts[1]
    assert texts[2].startswith("Not enough memory") and texts[2].endswith("(why)")
