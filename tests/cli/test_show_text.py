"""`olla show`'s text: the Projector section as `ollama show` prints it."""

from __future__ import annotations

import pytest

from olla.show_text import human_number, render_show


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (999, "999"),
        (5_400, "5K"),
        (12_000_000, "12M"),
        (93_470_000, "93.47M"),
        (1_200_000_000, "1.2B"),
        (7_000_000_000, "7B"),
    ],
)
def test_human_number_is_ollamas(count: int, text: str) -> None:
    assert human_number(count) == text


def test_the_projector_section_follows_the_capabilities() -> None:
    info = {
        "capabilities": ["completion", "vision"],
        "projector_info": {
            "general.architecture": "clip",
            "general.parameter_count": 93_470_000,
            "clip.vision.embedding_length": 768,
            "clip.vision.projection_dim": 576,
        },
    }
    lines = render_show(info).splitlines()
    at = lines.index("  Projector")
    assert lines[at - 3 : at] == ["    completion", "    vision", ""]
    assert [line.split() for line in lines[at + 1 : at + 5]] == [
        ["architecture", "clip"],
        ["parameters", "93.47M"],
        ["embedding", "length", "768"],
        ["dimensions", "576"],
    ]
    assert "Projector" not in render_show({"capabilities": ["completion"]})
