"""Image tags in a prompt as the runner reads them: the first tag of each image sent; any other
`[img-N]` is the user's own text."""

from __future__ import annotations

from olla.backends.llama_vision import split_tags


def test_each_image_is_placed_at_its_first_tag() -> None:
    texts, named = split_tags("a[img-1]b[img-0]c", 2)
    assert texts == ["a", "b", "c"] and named == [1, 0]


def test_a_tag_naming_no_image_sent_or_an_image_again_stays_text() -> None:
    texts, named = split_tags("[img-0] see [img-0] and [img-5]", 1)
    assert texts == ["", " see [img-0] and [img-5]"] and named == [0]


def test_a_prompt_without_tags_is_one_text() -> None:
    assert split_tags("plain", 0) == (["plain"], [])
