"""The chats list on the server through the page (no keys: the local owner): a chat survives a
reload, and rename, search, export, import and delete work from the list."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import UiPage

LAST_ANSWER = "#messages .message.assistant >> nth=-1"


def chat(page: Page, text: str) -> None:
    page.select_option("#model", "echo:latest")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    expect(page.locator(LAST_ANSWER).locator(".stats")).to_be_visible(timeout=120_000)


def test_a_chat_survives_a_reload_with_its_stats(ui: UiPage) -> None:
    page = ui.open()
    chat(page, "remember the walrus")
    expect(page.locator("#chats li .title:text('remember the walrus')")).to_have_count(1)
    answer = page.locator(LAST_ANSWER).inner_text()
    page.reload()
    ui.ready()
    expect(page.locator("#messages .message")).to_have_count(0)  # a new chat
    page.click("#chats li .title:text('remember the walrus')")
    expect(page.locator("#messages .message")).to_have_count(2)
    assert page.locator(LAST_ANSWER).inner_text() == answer
    assert page.locator("#model").input_value() == "echo:latest"


def test_rename_search_export_import_and_delete_from_the_list(ui: UiPage) -> None:
    page = ui.open()
    before = page.locator("#chats li").count()  # the module's daemon keeps earlier tests' chats
    chat(page, "first topic zebra")
    page.click("#new-chat")
    chat(page, "second topic yak")
    expect(page.locator("#chats li")).to_have_count(before + 2)
    # newest first
    assert page.locator("#chats li .title").first.inner_text() == "second topic yak"

    page.once("dialog", lambda d: d.accept("Renamed yak"))
    page.locator("#chats li").first.locator("button:text('Rename')").click()
    expect(page.locator("#chats li .title").first).to_have_text("Renamed yak")

    page.fill("#search", "zebra")
    expect(page.locator("#chats li")).to_have_count(1)
    expect(page.locator("#chats li .title")).to_have_text("first topic zebra")

    with page.expect_download() as download:
        page.locator("#chats li a:text('MD')").click()
    assert download.value.suggested_filename.endswith(".md")
    text = open(download.value.path(), encoding="utf-8").read()
    assert "first topic zebra" in text

    with page.expect_download() as exported:
        page.locator("#chats li a:text('JSON')").click()
    page.set_input_files("#import", exported.value.path())
    expect(page.locator("#chats li")).to_have_count(2)  # the search still says zebra
    expect(page.locator("#messages .message.user .content")).to_have_text("first topic zebra")
    page.once("dialog", lambda d: d.accept())
    page.locator("#chats li").first.locator("button:text('Delete')").click()
    expect(page.locator("#chats li")).to_have_count(1)

    page.once("dialog", lambda d: d.accept())
    page.locator("#chats li button:text('Delete')").click()
    expect(page.locator("#chats li")).to_have_count(0)
    page.fill("#search", "")
    expect(page.locator("#chats li")).to_have_count(before + 1)
    expect(page.locator("#chats li .title").first).to_have_text("Renamed yak")
