"""TagParser, token by token: Ollama's cases, tags split at every position, missing closers."""

from __future__ import annotations

import random

import pytest

from olla.thinking.parser import TagParser, held_back

OPEN, CLOSE = "<think>", "</think>"


def parse(chunks: list[str], inside: bool = False) -> list[tuple[str, str]]:
    """What each feed gives, then what finish gives."""
    parser = TagParser(OPEN, CLOSE, inside=inside)
    return [*(parser.feed(chunk) for chunk in chunks), parser.finish()]


def joined(chunks: list[str], inside: bool = False) -> tuple[str, str]:
    steps = parse(chunks, inside)
    return "".join(t for t, _ in steps), "".join(c for _, c in steps)


# (model output, inside, thinking, content): the whole answer at once
WHOLE = [
    ("<think> internal </think> world", False, "internal ", "world"),
    ("<think>a</think><think>b</think>c", False, "a", "<think>b</think>c"),  # second: content
    ("no think", False, "", "no think"),
    ("  abc <think>def</think> ghi", False, "", "  abc <think>def</think> ghi"),  # skipped
    ("  <think>abc</think>\n\ndef ", False, "abc", "def "),
    ("<think>\n\nOkay, so 2+2.\n</think>\n\nIt is 4.", False, "Okay, so 2+2.\n", "It is 4."),
    ("<think>\n</think>\n\nHi there", False, "", "Hi there"),  # empty reasoning
    ("<think>still thinking when it stopped", False, "still thinking when it stopped", ""),
    ("<think>cut in the closer </thi", False, "cut in the closer </thi", ""),
    ("<thi", False, "", "<thi"),  # an opening tag that never completed is the answer
    ("   ", False, "", "   "),
    ("", False, "", ""),
    # the prompt opened the tag: the model's first words are reasoning
    ("\nOkay, the user says hi.\n</think>\n\nHello!", True, "Okay, the user says hi.\n", "Hello!"),
    ("reason</think>answer", True, "reason", "answer"),
    ("<think>\nreason</think>answer", True, "reason", "answer"),  # written again: eaten
    ("no closer at all", True, "no closer at all", ""),
    ("<thi", True, "<thi", ""),
    ("</think>just the answer", True, "", "just the answer"),
]


@pytest.mark.parametrize(("text", "inside", "thinking", "content"), WHOLE)
def test_a_whole_answer(text: str, inside: bool, thinking: str, content: str) -> None:
    assert joined([text], inside) == (thinking, content)


@pytest.mark.parametrize(("text", "inside", "thinking", "content"), WHOLE)
def test_split_at_every_position_gives_the_same(
    text: str, inside: bool, thinking: str, content: str
) -> None:
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert joined([text[:i], text[i:j], text[j:]], inside) == (thinking, content), (i, j)
    assert joined(list(text), inside) == (thinking, content)


def test_random_chunkings_never_leak_a_tag() -> None:
    rng = random.Random(24)
    text = "  <think>\nLet me see: <b>bold</b> is not </thinking>.\n</think>\n\nAnswer: <think>x"
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        steps = parse(chunks)
        thinking = "".join(t for t, _ in steps)
        assert thinking == "Let me see: <b>bold</b> is not </thinking>.\n"
        assert "".join(c for _, c in steps) == "Answer: <think>x"
        assert not any("</think>" in t or "<think" in t for t, _ in steps)


# Ollama's streaming cases: what each chunk gives out at once
STEPS = {
    "content without a thinking tag": [("  abc", "", "  abc"), ("def", "", "def")],
    "building up the opening tag": [("  <th", "", ""), ("in", "", ""), ("k>a", "a", "")],
    "partial closing tag": [("<think>abc</th", "abc", ""), ("ink>def", "", "def")],
    "partial closing tag fakeout": [
        ("<think>abc</th", "abc", ""),
        ("ing>def", "</thing>def", ""),
        ("ghi</thi", "ghi", ""),
        ("nk>jkl", "", "jkl"),
    ],
    "whitespace after the closing tag": [
        ("  <think>abc</think>", "abc", ""),
        ("\n\ndef", "", "def"),
    ],
    "token by token": [
        ("<think>", "", ""),
        ("\n", "", ""),
        ("</think>", "", ""),
        ("\n\n", "", ""),
        ("Hi", "", "Hi"),
        (" there", "", " there"),
    ],
    "leading thinking whitespace": [
        ("  <think>   \t ", "", ""),
        ("  these are some ", "these are some ", ""),
        ("thoughts </think>  ", "thoughts ", ""),
        ("  more content", "", "more content"),
    ],
}


@pytest.mark.parametrize("case", STEPS)
def test_each_chunk_gives_what_is_certain(case: str) -> None:
    parser = TagParser(OPEN, CLOSE)
    for chunk, thinking, content in STEPS[case]:
        assert parser.feed(chunk) == (thinking, content), chunk
    assert parser.finish() == ("", "")


def test_a_missing_closer_is_thinking_until_finish_gives_what_was_held() -> None:
    parser = TagParser(OPEN, CLOSE)
    assert parser.feed("<think>almost done </") == ("almost done ", "")
    assert parser.feed("thin") == ("", "")
    assert parser.finish() == ("</thin", "")
    assert parser.finish() == ("", "")  # nothing twice


def test_inside_starts_in_the_reasoning() -> None:
    parser = TagParser(OPEN, CLOSE, inside=True)
    assert parser.feed("\n") == ("", "")
    assert parser.feed("Hmm") == ("Hmm", "")
    assert parser.feed(", ok.</think>") == (", ok.", "")
    assert parser.feed("\n\nYes.") == ("", "Yes.")


def test_other_tags() -> None:
    parser = TagParser("[THINK]", "[/THINK]")
    assert parser.feed("[THINK]a plan[/TH") == ("a plan", "")
    assert parser.feed("INK]The answer") == ("", "The answer")
    parser = TagParser("◁think▷", "◁/think▷")  # Kimi's
    assert parser.feed("◁think▷x◁/think▷y") == ("x", "y")


def test_empty_tags_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        TagParser("", CLOSE)


@pytest.mark.parametrize(
    ("text", "tags", "held"),
    [
        ("abc</th", (CLOSE,), 4),
        ("abc</think", (CLOSE,), 7),
        ("abc</think>", (CLOSE,), 0),  # a whole tag is not held: it was found
        ("abc", (CLOSE,), 0),
        ("a<", ("<|end|>", "<|call|>"), 1),
        ("a<|ca", ("<|end|>", "<|call|>"), 4),
        ("", (CLOSE,), 0),
    ],
)
def test_held_back(text: str, tags: tuple[str, ...], held: int) -> None:
    assert held_back(text, *tags) == held
