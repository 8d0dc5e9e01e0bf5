"""Images checked before a model sees them, and tagged in the prompt (olla.images)."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image as PILImage

from olla.chat import Message
from olla.errors import InvalidRequest
from olla.images import (
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    Image,
    check_image,
    check_images,
    image_of,
    images_field,
    images_in,
    tag_messages,
    tag_raw,
    with_images,
)


def encoded(fmt: str, size: tuple[int, int] = (8, 6), mode: str = "RGB", **save: object) -> str:
    """base64 of a small picture saved in `fmt`, made in memory."""
    buffer = io.BytesIO()
    PILImage.new(mode, size, (200, 30, 90) if mode == "RGB" else 1).save(buffer, fmt, **save)
    return base64.b64encode(buffer.getvalue()).decode()


def refusal(data: str, where: str = "images[0]") -> str:
    with pytest.raises(InvalidRequest) as caught:
        check_image(Image(data, where))
    assert caught.value.status == 400
    return str(caught.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_each_format_taken_is_accepted(fmt: str) -> None:
    check_image(Image(encoded(fmt), "images[0]"))


def test_an_animated_gif_is_accepted_for_its_first_frame() -> None:
    frames = [PILImage.new("RGB", (8, 8), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    check_image(Image(base64.b64encode(buffer.getvalue()).decode(), "images[0]"))


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_another_format_is_refused_naming_it_and_the_formats_taken(fmt: str) -> None:
    message = refusal(encoded(fmt), "messages[2].images[1]")
    assert message.startswith(f"messages[2].images[1]: {fmt} images are not taken")
    assert "JPEG, PNG, WebP or GIF" in message


def test_bytes_that_are_no_image_are_refused() -> None:
    message = refusal(base64.b64encode(b"just some text, not a picture").decode())
    assert message.startswith("images[0] is not an image file olla reads")


def test_a_cut_off_png_is_refused_as_not_whole() -> None:
    whole = base64.b64decode(encoded("PNG", (64, 64)))
    cut = base64.b64encode(whole[: len(whole) - 40]).decode()
    message = refusal(cut)
    assert message.startswith("images[0] is not a whole image: the PNG file is corrupt or cut")


def test_a_corrupt_jpeg_is_refused() -> None:
    data = bytearray(base64.b64decode(encoded("JPEG", (64, 64))))
    data[200:] = b"\x00" * (len(data) - 200)  # the header stays, the scan is zeros
    message = refusal(base64.b64encode(bytes(data)).decode())
    assert "is not a whole image" in message


@pytest.mark.parametrize("text", ["not base64!", "QUJD=A", "QQ"])
def test_text_that_is_not_base64_is_refused(text: str) -> None:
    assert refusal(text).startswith("images[0] is not valid base64")


def test_line_breaks_in_base64_are_taken_as_go_takes_them() -> None:
    data = encoded("PNG")
    image = image_of(data[:10] + "\r\n" + data[10:] + "\n", "images[0]")
    assert image.data == data
    check_image(image)


def test_an_empty_image_is_refused() -> None:
    assert refusal("") == "images[0] is empty: send the image file's bytes in base64"


def test_an_image_over_the_byte_limit_is_refused_before_it_is_decoded() -> None:
    big = "A" * (4 * (MAX_IMAGE_BYTES // 3) + 8)
    with pytest.raises(InvalidRequest, match=r"images\[3\] is 20\.0 MiB; olla takes images of"):
        image_of(big, "images[3]")


def test_an_image_over_the_pixel_limit_is_refused_naming_its_size() -> None:
    message = refusal(encoded("PNG", (4097, 4096), mode="1"))
    assert message.startswith("images[0] is 4097x4096 pixels; olla takes at most 16.8 megapixels")


def test_a_decompression_bomb_is_a_clear_400() -> None:
    message = refusal(encoded("PNG", (14000, 14000), mode="1"))  # past Pillow's own guard
    assert message.startswith("images[0] has too many pixels; olla takes at most 16.8 megapixels")


def test_too_many_images_in_one_request_are_refused() -> None:
    images = [Image(encoded("PNG"), f"images[{i}]") for i in range(MAX_IMAGES + 1)]
    with pytest.raises(InvalidRequest, match=f"has {MAX_IMAGES + 1} images; olla takes at most"):
        asyncio.run(check_images(images))
    asyncio.run(check_images(images[:MAX_IMAGES]))


def test_the_images_field_must_be_a_list_of_strings() -> None:
    assert images_field(None, "images") == ()
    with pytest.raises(InvalidRequest, match="images must be a list of base64 strings"):
        images_field("abc", "images")
    with pytest.raises(InvalidRequest, match=r"images\[1\] must be a base64 string"):
        images_field(["QUJD", 5], "images")


def test_tags_go_before_the_text_or_replace_placeholders_numbered_over_the_chat() -> None:
    a, b, c = (Image(x, f"i{x}") for x in ("a", "b", "c"))
    messages = [
        Message("system", "look"),
        with_images(Message("user", "what is this?"), [a, b]),
        Message("assistant", "two cats"),
        with_images({"role": "user", "content": "compare [img] with the first"}, [c]),
    ]
    tagged = tag_messages(messages)
    assert tagged[0] == Message("system", "look")
    assert tagged[1] == {"role": "user", "content": "[img-0][img-1]what is this?"}
    assert tagged[3] == {"role": "user", "content": "compare [img-2] with the first"}
    assert images_in(messages) == (a, b, c)


def test_placeholders_are_filled_in_order_and_the_rest_prefixed() -> None:
    images = [Image(str(i), str(i)) for i in range(3)]
    [tagged] = tag_messages([with_images(Message("user", "[img] then [img]"), images)])
    assert tagged == {"role": "user", "content": "[img-2][img-0] then [img-1]"}


def test_a_raw_prompt_places_its_images_where_it_names_them() -> None:
    images = [Image("a", "images[0]"), Image("b", "images[1]")]
    assert tag_raw("<u>[img-1] and [img]</u>", images) == "<u>[img-1] and [img-0]</u>"
    with pytest.raises(InvalidRequest, match=r"write \[img-1\] \(or \[img\]\) where image 1"):
        tag_raw("<u>[img-0] only</u>", images)
