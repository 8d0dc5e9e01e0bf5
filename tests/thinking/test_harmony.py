"""HarmonyParser, token by token: gpt-oss's channels, calls as soon as they end, split tokens."""

from __future__ import annotations

import random

import pytest

from olla.thinking.harmony import (
    SPECIAL,
    HarmonyCall,
    HarmonyParser,
    HarmonyPiece,
    harmony_names,
)

WEATHER = HarmonyCall("get_weather", '{"location":"Paris"}')
TO_WEATHER = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
NEXT = "<|start|>assistant"  # a message after the first


def whole(chunks: list[str], inside: bool = True) -> HarmonyPiece:
    """Every feed and the finish, added up."""
    parser = HarmonyParser(inside=inside)
    pieces = [*(parser.feed(chunk) for chunk in chunks), parser.finish()]
    return HarmonyPiece(
        "".join(p.thinking for p in pieces),
        "".join(p.content for p in pieces),
        tuple(call for p in pieces for call in p.calls),
    )


# (what the model wrote after the prompt's `<|start|>assistant`, what it means)
ANSWERS = {
    "analysis then final": (
        "<|channel|>analysis<|message|>User says hi. Reply.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hello! How can I help?<|return|>",
        HarmonyPiece("User says hi. Reply.", "Hello! How can I help?"),
    ),
    "final alone, ended by the end of output": (
        "<|channel|>final<|message|>Just this.",
        HarmonyPiece("", "Just this."),
    ),
    "a call ended by <|call|>": (
        "<|channel|>analysis<|message|>Need weather.<|end|>"
        f"{NEXT}{TO_WEATHER}{WEATHER.arguments}<|call|>",
        HarmonyPiece("Need weather.", "", (WEATHER,)),
    ),
    "a call ended by the end of output (the runner stopped at <|call|>)": (
        TO_WEATHER + WEATHER.arguments,
        HarmonyPiece("", "", (WEATHER,)),
    ),
    "constrain with no space, recipient before the channel": (
        " to=functions.get_weather<|channel|>commentary<|constrain|>json<|message|>"
        f"{WEATHER.arguments}<|call|>",
        HarmonyPiece("", "", (WEATHER,)),
    ),
    "a preamble on commentary is content, then a call": (
        "<|channel|>commentary<|message|>Let me check.<|end|>"
        f"{NEXT}<|channel|>commentary to=functions.get_weather json<|message|>"
        f"{WEATHER.arguments}<|call|>",
        HarmonyPiece("", "Let me check.", (WEATHER,)),
    ),
    "two calls": (
        '<|channel|>commentary to=functions.a <|constrain|>json<|message|>{"x":1}<|call|>'
        f"{NEXT}<|channel|>commentary to=functions.b <|constrain|>json<|message|>{{}}<|call|>",
        HarmonyPiece("", "", (HarmonyCall("a", '{"x":1}'), HarmonyCall("b", "{}"))),
    ),
    "a built-in tool on analysis is a call by its full name": (
        '<|channel|>analysis to=browser.search <|constrain|>json<|message|>{"query":"x"}<|call|>',
        HarmonyPiece("", "", (HarmonyCall("browser.search", '{"query":"x"}'),)),
    ),
    "text between messages is dropped": (
        "<|channel|>analysis<|message|>a<|end|>\n\nstray<|start|>assistant<|channel|>final<|message|>b",
        HarmonyPiece("a", "b"),
    ),
    "<|start|> before the last message ended ends it": (
        "<|channel|>analysis<|message|>a<|start|>assistant<|channel|>final<|message|>b<|return|>",
        HarmonyPiece("a", "b"),
    ),
    "<|channel|> with <|start|>assistant left out": (
        "<|channel|>analysis<|message|>a<|end|><|channel|>final<|message|>b",
        HarmonyPiece("a", "b"),
    ),
    "the prompt's header written again": (
        "<|start|>assistant<|channel|>final<|message|>b<|end|>",
        HarmonyPiece("", "b"),
    ),
    "an unknown channel is content, as Ollama": (
        "<|channel|>thinking<|message|>what",
        HarmonyPiece("", "what"),
    ),
    "a header with no channel is content": ("<|message|>plain", HarmonyPiece("", "plain")),
    "stray tokens in a body never show": (
        "<|channel|>final<|message|>a<|message|>b<|constrain|>c",
        HarmonyPiece("", "abc"),
    ),
    "text like a token, but not one, is text": (
        "<|channel|>final<|message|>x <|im_end|> <| y <",
        HarmonyPiece("", "x <|im_end|> <| y <"),
    ),
    "an output that ends in a header gives nothing": (
        "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|chan",
        HarmonyPiece("a", ""),
    ),
}


@pytest.mark.parametrize("case", ANSWERS)
def test_a_whole_answer(case: str) -> None:
    text, want = ANSWERS[case]
    assert whole([text]) == want


@pytest.mark.parametrize("case", ANSWERS)
def test_split_at_every_position_gives_the_same(case: str) -> None:
    text, want = ANSWERS[case]
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1, 3):
            assert whole([text[:i], text[i:j], text[j:]]) == want, (i, j)
    assert whole(list(text)) == want


def test_random_chunkings_never_show_a_special_token() -> None:
    rng = random.Random(24)
    text = "".join(text for text, _ in ANSWERS.values())
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        parser = HarmonyParser(inside=True)
        for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
            piece = parser.feed(text[a:b])
            shown = piece.thinking + piece.content
            assert not any(token in shown for token in SPECIAL)
            assert not shown.endswith(("<|", "<|e", "<|en", "<|end")), shown


def test_each_piece_comes_as_soon_as_it_is_certain() -> None:
    parser = HarmonyParser(inside=True)
    assert parser.feed("<|chan") == HarmonyPiece()
    assert parser.feed("nel|>analysis<|message|>Thinking") == HarmonyPiece("Thinking")
    assert parser.feed("...<|e") == HarmonyPiece("...")
    assert parser.feed("nd|>") == HarmonyPiece()
    assert parser.feed("<|start|>assistant<|channel|>commentary to=functions.get_weather") == (
        HarmonyPiece()
    )
    assert parser.feed(' <|constrain|>json<|message|>{"location":') == HarmonyPiece()
    assert parser.feed('"Paris"}<|ca') == HarmonyPiece()  # a call waits for its end
    assert parser.feed("ll|>") == HarmonyPiece(calls=(WEATHER,))
    assert parser.feed("<|start|>assistant<|channel|>final<|message|>Sunny") == (
        HarmonyPiece(content="Sunny")
    )
    assert parser.finish() == HarmonyPiece()


def test_without_inside_the_output_starts_a_message_of_its_own() -> None:
    text = f"{NEXT}<|channel|>analysis<|message|>a<|end|>{NEXT}<|channel|>final<|message|>b"
    assert whole([text], inside=False) == HarmonyPiece("a", "b")
    assert whole(["before any message<|channel|>final<|message|>b"], inside=False) == (
        HarmonyPiece("", "b")
    )


def test_a_prefilled_message_goes_on_once_its_opening_is_fed() -> None:
    """Ollama's prefill: the prompt ended inside the last assistant message's final channel."""
    parser = HarmonyParser()
    assert parser.feed("<|start|>assistant<|channel|>final<|message|>") == HarmonyPiece()
    assert parser.feed(" and more.") == HarmonyPiece(content=" and more.")


def test_harmony_names_are_identifiers_as_ollama_renames_them() -> None:
    names = ["get_weather", "get-weather", "get weather", "2fa", "héllo wörld!", "", "?!"]
    assert harmony_names([*names, "python", "browser.search", "get_weather"]) == {
        "get_weather": "get_weather",
        "get-weather": "get_weather_2",  # taken: numbered from 2
        "get weather": "get_weather_3",
        "2fa": "_2fa",
        "héllo wörld!": "héllo_wörld",
        "": "unnamed",
        "?!": "unnamed_2",
        "python": "python",  # gpt-oss's built-in tools keep their names
        "browser.search": "browser.search",
    }
