"""Durations and sizes as users write them."""

from __future__ import annotations

import pytest

from olla.units import format_ago, format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300),
        ("1h30m", 5400),
        ("300", 300),
        (300, 300),
        ("-1", -1),
        (-1, -1),
        ("0", 0),
        ("500ms", 0.5),
        ("1.5h", 5400),
        ("-5m", -300),
        ("2h0m10s", 7210),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "m", "1d", "5m3", "nan", True, "1h-2m"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


def test_format_duration() -> None:
    assert format_duration(300) == "5m0s"
    assert format_duration(5410) == "1h30m10s"
    assert format_duration(-1) == "forever"
    assert format_duration(0.5) == "0.5s"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        (5, 5),
        ("512MB", 512_000_000),
        ("8GiB", 8 * 1024**3),
        ("1.5k", 1500),
        ("16MiB", 16 * 1024**2),
        ("3 b", 3),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5", "5 XB", -1])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


def test_format_size_and_ago() -> None:
    assert format_size(98_362_432) == "98 MB"
    assert format_size(4_700_000_000) == "4.7 GB"
    assert format_size(512) == "512 B"
    assert format_ago(0.2) == "Less than a second ago"
    assert format_ago(30) == "30 seconds ago"
    assert format_ago(90) == "About a minute ago"
    assert format_ago(600) == "10 minutes ago"
    assert format_ago(3 * 86400) == "3 days ago"
