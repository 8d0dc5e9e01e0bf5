"""Image attachments: offered for a model with the `vision` capability only, sent as base64 in
the message's `images`, shown beside the message. The vision model is SmolLM2 with a random-weight
projector (tests/conftest.py): it tests the mechanics, never what the model sees."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import UiPage
from tests.conftest import Daemon, make_daemon
from tests.daemon_helpers import create_model
from tests.integration.test_vision import RED

LAST_ANSWER = "#messages .message.assistant >> nth=-1"


@pytest.fixture(scope="module")
def ui_daemon(
    tmp_path_factory: pytest.TempPathFactory,
    smollm2_gguf: Path,
    smolvlm_text_gguf: Path,
    smolvlm_mmproj: Path,
) -> Iterator[Daemon]:
    """A daemon with `seer` (a vision model) and `text` (none)."""
    root = tmp_path_factory.mktemp("ui-vision")
    d = make_daemon(root)
    d.start()
    (root / "Visionfile").write_text(
        f"FROM {smolvlm_text_gguf}\nFROM {smolvlm_mmproj}\nPARAMETER num_predict 8\n"
    )
    create_model(d, "seer", root / "Visionfile")
    (root / "Textfile").write_text(f"FROM {smollm2_gguf}\n")
    create_model(d, "text", root / "Textfile")
    yield d
    d.stop()


def test_an_image_goes_with_the_message_to_a_vision_model(ui: UiPage, tmp_path: Path) -> None:
    page = ui.open()
    page.select_option("#model", "text:latest")
    page.dispatch_event("#model", "change")
    expect(page.locator("#attach-label")).to_be_hidden()
    page.select_option("#model", "seer:latest")
    expect(page.locator("#attach-label")).to_be_visible()

    image = tmp_path / "red.png"
    image.write_bytes(RED)
    page.set_input_files("#attach", str(image))
    expect(page.locator("#attachments")).to_have_text("1 image(s) attached")
    page.fill("#prompt", "What is in this picture?")
    with page.expect_request("**/api/chat") as sent:
        page.press("#prompt", "Enter")
    message = json.loads(sent.value.post_data or "{}")["messages"][-1]
    assert message["images"] == [base64.b64encode(RED).decode()]
    expect(page.locator(LAST_ANSWER).locator(".stats")).to_be_visible(timeout=120_000)
    thumb = page.locator("#messages .message.user img.thumb")
    expect(thumb).to_have_count(1)
    # the thumbnail is the file sent, decoded by the browser (img-src allows data:)
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 96
