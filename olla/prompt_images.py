"""The images of a prompt in `olla run`, as `ollama run` sends them: the paths to image files
typed in the text (`olla.image_paths`) are read, checked and sent base64 in the message's
`images`, and taken out of the text; each one added is said on stderr (`Added image '...'`).

A model without the `vision` capability gets the text as it was typed, paths included, after a
warning on stderr: Ollama's CLI looks for images only when the model reads them, so that a path
in a question to a text-only model ("rename ./a.png") stays part of the question.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import click

from olla.errors import InvalidRequest
from olla.image_paths import find_image_paths, remove_paths

VISION = "vision"  # as /api/show lists capabilities
MAX_IMAGE_BYTES = 100 * 1024 * 1024  # as Ollama's CLI; the daemon has its own limits
_SNIFF_BYTES = 12  # enough for the signatures below


def has_vision(info: dict[str, Any]) -> bool:
    """Whether the model reads images, by its /api/show (its capabilities, or a projector)."""
    return VISION in (info.get("capabilities") or []) or bool(info.get("projector_info"))


def image_kind(head: bytes) -> str | None:
    """`jpeg`, `png` or `webp` by a file's first bytes (its signature); None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def read_image(path: str) -> bytes:
    """The bytes of the image file at `path`; InvalidRequest, which says what is wrong, when it
    cannot be read, is too big, or is not a JPEG, PNG or WebP image."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_IMAGE_BYTES:
                raise InvalidRequest(
                    f"couldn't add image '{path}': it is {size} bytes, "
                    f"more than the {MAX_IMAGE_BYTES // (1024 * 1024)} MiB an image may have"
                )
            data = f.read()
    except OSError as exc:
        raise InvalidRequest(f"couldn't add image '{path}': {exc.strerror or exc}") from None
    if image_kind(data[:_SNIFF_BYTES]) is None:
        raise InvalidRequest(f"couldn't add image '{path}': it is not a JPEG, PNG or WebP image")
    return data


def attach_images(text: str, vision: bool, model: str) -> tuple[str, list[str]]:
    """The text to send and its images, base64, for `model` (`vision`: it reads images).

    Raises InvalidRequest for an image that cannot be read; nothing is sent then.
    """
    found = find_image_paths(text, os.path.isfile, os.path.expanduser("~"))
    if not found:
        return text, []
    if not vision:
        named = ", ".join(f"'{p.path}'" for p in found)
        click.echo(
            f'warning: model "{model}" reads text only (it has no vision capability); '
            f"{named} goes to it as text, not as an image",
            err=True,
        )
        return text, []
    # all read before any is announced: one that cannot be read sends nothing
    images = [base64.b64encode(read_image(p.path)).decode("ascii") for p in found]
    for p in found:
        click.echo(f"Added image '{p.path}'", err=True)
    return remove_paths(text, found), images


def starts_with_image_path(text: str) -> bool:
    """Whether `text` begins with a path to an image file: a chat line such as
    `/home/me/cat.png what is this?` is a question, not an unknown `/command`."""
    found = find_image_paths(text, os.path.isfile, os.path.expanduser("~"))
    return bool(found) and found[0].start == len(text) - len(text.lstrip())
