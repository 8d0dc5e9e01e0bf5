"""Streaming detokenizer: UTF-8 safety, stop strings, hold-back, against a naive reference."""

from __future__ import annotations

import codecs
import random

import pytest

from olla.engine.detokenizer import Detokenizer

EURO = "€".encode()  # 3 bytes


def detok(pieces: list[bytes], stop: list[str]) -> Detokenizer:
    return Detokenizer(pieces.__getitem__, stop)


def feed(pieces: list[bytes], stop: list[str]) -> tuple[list[str], str, bool]:
    """Each add's release, what finish releases, and whether it stopped."""
    d = detok(pieces, stop)
    released = []
    for i in range(len(pieces)):
        released.append(d.add(i))
        if d.stopped:
            break
    return released, d.finish(), d.stopped


def test_a_character_split_across_tokens_is_released_whole() -> None:
    pieces = [b"a", EURO[:1], EURO[1:2], EURO[2:] + b"b"]
    assert feed(pieces, []) == (["a", "", "", "€b"], "", False)


def test_invalid_bytes_become_replacement_characters_once_certain() -> None:
    # 0xE2 starts a 3-byte character; "x" proves it will never complete
    assert feed([b"\xe2", b"x", b"\xff"], []) == (["", "\ufffdx", "\ufffd"], "", False)
    # an incomplete character at the very end is released as U+FFFD by finish
    assert feed([b"ok", EURO[:2]], []) == (["ok", ""], "\ufffd", False)


def test_a_stop_string_across_token_boundaries_is_never_released() -> None:
    pieces = [b"Hello <", b"|e", b"nd|> and more"]
    assert feed(pieces, ["<|end|>"]) == (["Hello ", "", ""], "", True)


def test_text_after_the_stop_string_in_the_same_token_is_dropped() -> None:
    assert feed([b"one STOP two"], ["STOP"]) == (["one "], "", True)


def test_held_back_text_is_released_when_it_cannot_be_a_stop() -> None:
    assert feed([b"a<", b"|e", b"x"], ["<|end|>"]) == (["a", "", "<|ex"], "", False)


def test_held_back_text_is_released_by_finish() -> None:
    assert feed([b"a<|en"], ["<|end|>"]) == (["a"], "<|en", False)


def test_a_stop_string_at_the_very_start() -> None:
    assert feed([b"STOP", b"later"], ["STOP"]) == ([""], "", True)
    assert feed([b"ST", b"OP"], ["STOP"]) == (["", ""], "", True)


def test_overlapping_stop_candidates() -> None:
    # "aab" must be found in "aaab" although the first "aa" did not lead to it
    assert feed([b"a", b"a", b"a", b"b"], ["aab"]) == (["", "", "a", ""], "", True)
    # of two stop strings, the one that starts first wins when both end in the same token
    assert feed([b"x", b"abcd"], ["bc", "abcd"]) == (["x", ""], "", True)
    # ... but a stop string complete at an earlier token ends the text there
    assert feed([b"xabc", b"d"], ["bc", "abcd"]) == (["xa"], "", True)
    # the hold-back is the longest tail that begins any stop string
    assert feed([b"zab"], ["abc", "bx"]) == (["z"], "ab", False)


def test_the_stop_string_that_ended_the_text_is_named() -> None:
    d = detok([b"x", b"abcd"], ["bc", "abcd"])
    d.add(0)
    d.add(1)
    assert d.stopped and d.matched == "abcd"  # the one that starts first
    d = detok([b"xabc", b"d"], ["abcd", "bc"])
    d.add(0)
    assert d.stopped and d.matched == "bc"
    d = detok([b"plain"], ["STOP"])
    d.add(0)
    assert not d.stopped and d.matched == ""


def test_after_stopping_nothing_more_is_released() -> None:
    d = detok([b"END", b"more"], ["END"])
    assert d.add(0) == "" and d.stopped
    assert d.add(1) == "" and d.finish() == ""


def test_without_stop_strings_everything_is_released_at_once() -> None:
    assert feed([b"a", b"<", b"b"], []) == (["a", "<", "b"], "", False)


def _decoded(data: bytes) -> str:
    """What can be decoded of `data` for sure (incomplete trailing bytes kept back)."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data)


def _reference(pieces: list[bytes], stops: list[str]) -> tuple[list[str], str]:
    """Naive O(n^2): after each token, decode everything; cut at a stop or hold back."""
    releases, released, data = [], "", b""
    for piece in pieces:
        data += piece
        text = _decoded(data)
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            releases.append(text[: min(found)][len(released) :])
            return releases, ""
        hold = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        releases.append(text[: len(text) - hold][len(released) :])
        released = text[: len(text) - hold]
    return releases, data.decode("utf-8", errors="replace")[len(released) :]


@pytest.mark.parametrize("seed", range(5))
def test_random_streams_match_a_naive_reference(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [b"a", b"b", b"<", b"|", b">", *(c.encode() for c in "é€😀"), b"\xff", b"\x80"]
    for _ in range(300):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 12))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        stops = rng.sample(["<|>", "ab", "aab", "é<", "b€", "|>a", "€€"], rng.randrange(0, 3))
        releases, rest, stopped = feed(pieces, stops)
        assert (releases, rest) == _reference(pieces, stops), (data, pieces, stops)
        assert stopped == any(s in _decoded(data) for s in stops)
