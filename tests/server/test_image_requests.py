"""Images in every API's request body: where each parser finds them, their order, and the tags
the prompt gets (olla.images.tag_messages), with a 400 naming the field for a bad one."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image as PILImage

from olla.api import parse_chat_messages
from olla.errors import InvalidRequest
from olla.images import Image, images_in, tag_messages
from olla.server.anthropic_requests import messages_request
from olla.server.openai_requests import messages as openai_messages
from olla.server.responses_input import conversation
from olla.templates import ChatMessage, content_of


def png(color: str) -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


RED, BLUE, GREEN = png("red"), png("blue"), png("green")


def contents(messages: list[ChatMessage]) -> list[str]:
    """What each message says once its images are tags."""
    return [content_of(m) for m in tag_messages(messages)]


def data_of(messages: list[ChatMessage]) -> list[str]:
    return [image.data for image in images_in(messages)]


def refused(parse: Any, *args: Any) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(*args)
    return str(caught.value)


# Ollama's /api/chat


def test_ollama_messages_images_are_tags_before_the_text_numbered_over_the_chat() -> None:
    messages = parse_chat_messages(
        [
            {"role": "user", "content": "what is this?", "images": [RED, BLUE]},
            {"role": "assistant", "content": "two squares"},
            {"role": "user", "content": "and [img] here?", "images": [GREEN]},
        ]
    )
    assert contents(messages) == [
        "[img-0][img-1]what is this?",
        "two squares",
        "and [img-2] here?",
    ]
    assert data_of(messages) == [RED, BLUE, GREEN]
    assert images_in(messages)[2].where == "messages[2].images[0]"


def test_ollama_images_keep_a_message_with_tool_calls_whole() -> None:
    call = {"function": {"name": "f", "arguments": {}}}
    [message] = parse_chat_messages(
        [{"role": "assistant", "content": "", "tool_calls": [call], "images": [RED]}]
    )
    assert isinstance(message, dict) and message["tool_calls"][0]["function"]["name"] == "f"
    assert data_of([message]) == [RED]


def test_ollama_images_must_be_a_list_of_strings() -> None:
    message = refused(parse_chat_messages, [{"role": "user", "content": "x", "images": [1]}])
    assert message.startswith("messages[0].images[0] must be a base64 string")


# OpenAI's /v1/chat/completions


def _url(data: str, kind: str = "png") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:image/{kind};base64,{data}"}}


def test_openai_image_url_parts_become_tags_where_the_parts_were() -> None:
    messages = openai_messages(
        [
            {"role": "system", "content": "look closely"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "compare "},
                    _url(RED),
                    {"type": "text", "text": " with "},
                    {"type": "image_url", "image_url": f"data:;base64,{BLUE}"},  # Ollama's forms
                ],
            },
            {"role": "user", "content": [_url(GREEN, "jpeg")]},
        ]
    )
    assert contents(messages) == ["look closely", "compare [img-0] with [img-1]", "[img-2]"]
    assert data_of(messages) == [RED, BLUE, GREEN]
    assert images_in(messages)[0].where == "messages[1].content[1].image_url.url"


@pytest.mark.parametrize(
    ("part", "says"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            "messages[0].content[0].image_url.url: olla fetches no image URLs; send the image",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}},
            "messages[0].content[0].image_url.url must be a data URI of a base64 image",
        ),
        ({"type": "image_url"}, "messages[0].content[0].image_url must be a data URI"),
        ({"type": "input_audio"}, "read text and images, not input_audio"),
    ],
)
def test_openai_bad_image_parts_are_refused_naming_the_part(part: Any, says: str) -> None:
    assert says in refused(openai_messages, [{"role": "user", "content": [part]}])


# Anthropic's /v1/messages


def _block(data: str, media_type: str = "image/png") -> dict[str, Any]:
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "image", "source": source}


def test_anthropic_image_blocks_are_the_user_messages_images_in_place() -> None:
    job = messages_request(
        {
            "model": "m",
            "max_tokens": 8,
            "messages": [
                {"role": "user", "content": [_block(RED), {"type": "text", "text": "what?"}]},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "cam", "input": {}}],
                },  # fmt: skip
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": [_block(BLUE)]},
                        {"type": "text", "text": "and now?"},
                        _block(GREEN, "image/webp"),
                    ],
                },
            ],
        }
    )
    assert contents(job.messages) == ["[img-0]what?", "", "[img-1]", "and now?[img-2]"]
    assert data_of(job.messages) == [RED, BLUE, GREEN]
    assert images_in(job.messages)[1].where == "messages[2].content[0].content[0].source.data"


@pytest.mark.parametrize(
    ("block", "says"),
    [
        (
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            "messages[0].content[0].source: olla takes images as base64 only, not by url",
        ),
        (_block(RED, "image/bmp"), "messages[0].content[0].source.media_type must be one of"),
        (_block(None), "messages[0].content[0].source.data must be a base64 string"),  # type: ignore[arg-type]
        ({"type": "document", "source": {}}, "olla reads no document blocks"),
    ],
)
def test_anthropic_bad_image_blocks_are_refused_naming_the_block(block: Any, says: str) -> None:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [block]}]}
    assert says in refused(messages_request, body)


# OpenAI's /v1/responses


def test_responses_input_image_parts_become_tags_in_place() -> None:
    messages = conversation(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is "},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{RED}"},
                    {
                        "type": "input_image",
                        "image_url": f"data:image/png;base64,{BLUE}",
                        "detail": "low",
                    },  # fmt: skip
                ],
            }
        ],
        "be brief",
    )
    assert contents(messages) == ["be brief", "what is [img-0][img-1]"]
    assert data_of(messages) == [RED, BLUE]


def test_responses_an_image_by_file_id_is_refused() -> None:
    part = {"type": "input_image", "file_id": "file-1"}
    says = refused(conversation, [{"role": "user", "content": [part]}], None)
    assert says.startswith("input[0].content[0].file_id: olla keeps no files")


def test_an_image_keeps_its_base64_as_sent() -> None:
    [message] = parse_chat_messages([{"role": "user", "content": "x", "images": [RED]}])
    assert images_in([message]) == (Image(RED, "messages[0].images[0]"),)
