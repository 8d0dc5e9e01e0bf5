"""Images a client sends with a prompt: found in a body, checked, and tagged in the prompt.

Every API's parser turns what it takes (Ollama's base64 `images`, OpenAI's data URIs, Anthropic's
base64 sources) into `Image`s: the base64 text and where in the body it was, so an error can say
which image is wrong. The daemon checks each one fully decoded with Pillow (off the event loop)
before a model sees it, and names image i in the prompt with the tag `[img-i]`, as Ollama does
(`server/prompt.go`): a message's images become tags before its text, or each replaces an
`[img]` placeholder in it. The runner swaps each tag for the image's tokens.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from olla.chat import Message
from olla.errors import InvalidRequest

IMAGE_TAG = "[img-{}]"  # image i of a Submit, where it goes in the prompt
PLACEHOLDER = "[img]"  # where a client puts its message's next image (Ollama's)

# Pillow's format names taken, as users know them; MPO is how Pillow reads many cameras' JPEGs
FORMATS: Mapping[str, str] = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "GIF": "GIF",
}
TAKEN = "JPEG, PNG, WebP or GIF (its first frame)"

# The limits. A vision projector scales every image down to its own size (384 to ~1,500 pixels
# a side), so these only bound what the daemon and the runner decode:
# - 20 MiB a file, as OpenAI takes; a 12-megapixel phone JPEG is 3-8 MB, a 4K PNG screenshot
#   up to ~10 MB. The body limit (OLLA_MAX_REQUEST_BYTES, 16 MiB; base64 adds a third) usually
#   binds first.
# - 4096 x 4096 pixels (16.8 megapixels): a 5K screenshot (14.7 M) and a 12 MP photo pass; it
#   decodes to at most 64 MiB (RGBA) here and again in the runner. Pillow's own bomb guard
#   (89 M, an error at 179 M) stays behind it.
# - 32 images a request: at the 64 to 768 tokens an image takes (SmolVLM to LLaVA), 32 fill
#   2k-24k tokens, past the default contexts; each also costs a decode here and an encode in
#   the runner.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGES = 32

_DATA_URL = re.compile(r"data:(image/[\w.+-]+)?;base64,", re.IGNORECASE)
_WHITESPACE = str.maketrans("", "", " \t\r\n")  # Go's base64 (Ollama's) skips line breaks


@dataclass(frozen=True)
class Image:
    """An image as a client sent it: base64 of its file, and where it was in the body."""

    data: str  # base64 (standard alphabet, padded), without line breaks
    where: str  # the field, for errors: "messages[1].images[0]"


ChatMessage: TypeAlias = Message | Mapping[str, Any]


def image_of(value: Any, where: str) -> Image:
    """One base64 image from a body; a 400 naming `where` for anything but a string that is
    short enough (the bytes themselves are checked by `check_images`)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a base64 string of an image file")
    data = value.translate(_WHITESPACE)
    if len(data) > 4 * ((MAX_IMAGE_BYTES + 2) // 3):
        raise InvalidRequest(_too_big(where, len(data) * 3 // 4))
    return Image(data, where)


def images_field(value: Any, where: str) -> tuple[Image, ...]:
    """Ollama's `images`: a list of base64 strings (null or absent: none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a list of base64 strings of image files")
    return tuple(image_of(item, f"{where}[{i}]") for i, item in enumerate(value))


def data_url_image(url: Any, where: str) -> Image:
    """An image sent as a data URI (`data:image/png;base64,...`), as OpenAI's APIs send it; a
    400 for a web address (olla fetches nothing on a client's behalf, as Ollama) or another form."""
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        raise InvalidRequest(
            f"{where}: olla fetches no image URLs; send the image in the request as a data URI "
            "(data:image/png;base64,...)"
        )
    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidRequest(
            f"{where} must be a data URI of a base64 image: data:image/png;base64,..."
        )
    return image_of(url[match.end() :], where)


def with_images(message: ChatMessage, images: Sequence[Image]) -> ChatMessage:
    """`message` carrying `images` (the key `images`), as chat messages hold them."""
    if not images:
        return message
    if isinstance(message, Message):
        return {"role": message.role, "content": message.content, "images": tuple(images)}
    return {**message, "images": tuple(images)}


def images_of(message: ChatMessage) -> tuple[Image, ...]:
    """The images `message` carries."""
    if isinstance(message, Message):
        return ()
    return tuple(message.get("images") or ())


def images_in(messages: Sequence[ChatMessage]) -> tuple[Image, ...]:
    """The images of `messages`, in the order `tag_messages` numbers them."""
    return tuple(image for message in messages for image in images_of(message))


def tag_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """`messages` with each image named by its tag in its message's content (numbered from 0
    over all of them) and the images taken out: what a template renders."""
    out: list[ChatMessage] = []
    number = 0
    for message in messages:
        images = images_of(message)
        if not images:
            out.append(message)
            continue
        assert not isinstance(message, Message)  # a Message carries no images
        content, number = _tagged(str(message.get("content") or ""), len(images), number)
        out.append({**{k: v for k, v in message.items() if k != "images"}, "content": content})
    return out


def tag_raw(text: str, images: Sequence[Image]) -> str:
    """A raw prompt, whose images go where it names them: `[img-i]`, or an `[img]` placeholder
    for each image it does not name, in order; a 400 for an image it does not place (a raw
    prompt is in the model's own format: olla cannot tell where an image belongs)."""
    for number in range(len(images)):
        tag = IMAGE_TAG.format(number)
        if tag in text:
            continue
        if PLACEHOLDER not in text:
            raise InvalidRequest(
                f'field "prompt": a raw prompt must place each of its images: write {tag} '
                f"(or {PLACEHOLDER}) where image {number} goes"
            )
        text = text.replace(PLACEHOLDER, tag, 1)
    return text


def _tagged(content: str, count: int, first: int) -> tuple[str, int]:
    """`content` with `count` images numbered from `first`: each replaces the next `[img]`, or
    its tag goes before the text (Ollama's `imageTaggedMessages`); and the next number."""
    prefix = ""
    for number in range(first, first + count):
        tag = IMAGE_TAG.format(number)
        if PLACEHOLDER in content:
            content = content.replace(PLACEHOLDER, tag, 1)
        else:
            prefix += tag
    return prefix + content, first + count


async def check_images(images: Sequence[Image]) -> None:
    """Each image decoded in full with Pillow, in a thread; a 400 for the first bad one."""
    if images:
        await asyncio.to_thread(_check_all, tuple(images))


def check_count(count: int) -> None:
    """A 400 past MAX_IMAGES images in one request."""
    if count > MAX_IMAGES:
        raise InvalidRequest(
            f"the request has {count} images; olla takes at most {MAX_IMAGES} in one request "
            "(send fewer, or drop the older turns' images)"
        )


def _check_all(images: tuple[Image, ...]) -> None:
    check_count(len(images))
    for image in images:
        check_image(image)


def check_image(image: Image) -> None:
    """A 400 naming `image.where` unless it is base64 of a whole JPEG, PNG, WebP or GIF
    within the limits."""
    data = decode(image)
    where, kind = image.where, "image"
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            if (picture.format or "") not in FORMATS:
                raise InvalidRequest(
                    f"{where}: {picture.format} images are not taken; send {TAKEN}"
                )
            if picture.width * picture.height > MAX_IMAGE_PIXELS:
                raise InvalidRequest(_too_many_pixels(where, picture.width, picture.height))
            kind = FORMATS[picture.format or ""]
            picture.load()  # the whole first frame: a corrupt or cut-off file fails here
    except PILImage.DecompressionBombError:
        raise InvalidRequest(_too_many_pixels(where, 0, 0)) from None
    except UnidentifiedImageError:
        raise InvalidRequest(
            f"{where} is not an image file olla reads (not one of {TAKEN}); send {TAKEN}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what Pillow's decoders raise
        raise InvalidRequest(
            f"{where} is not a whole image: the {kind} file is corrupt or cut short ({exc}); "
            "send the file complete"
        ) from None


def decode(image: Image) -> bytes:
    """The image's bytes; a 400 for text that is not base64 or is empty or too big."""
    try:
        data = base64.b64decode(image.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{image.where} is not valid base64: send the image file's bytes in standard "
            "base64 (A-Z, a-z, 0-9, +, /, padded with =)"
        ) from None
    if not data:
        raise InvalidRequest(f"{image.where} is empty: send the image file's bytes in base64")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(_too_big(image.where, len(data)))
    return data


def _too_big(where: str, size: int) -> str:
    return (
        f"{where} is {size / 2**20:.1f} MiB; olla takes images of at most "
        f"{MAX_IMAGE_BYTES // 2**20} MiB (scale it down or compress it)"
    )


def _too_many_pixels(where: str, width: int, height: int) -> str:
    size = f" is {width}x{height} pixels;" if width else " has too many pixels;"
    return (
        f"{where}{size} olla takes at most {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels "
        "(4096x4096); scale it down"
    )
