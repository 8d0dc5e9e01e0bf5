"""Tests for olla.registry.names: parsing, validation, case rules and path safety."""

from __future__ import annotations

import dataclasses
import random
from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from olla.errors import InvalidName, InvalidRequest
from olla.registry.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName

HF = "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF"


@pytest.mark.parametrize(
    ("text", "parts", "display"),
    [
        ("smollm2", (DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", DEFAULT_TAG), "smollm2:latest"),
        ("smollm2:135m", (DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", "135m"), "smollm2:135m"),
        ("jane/mymodel:v1", (DEFAULT_HOST, "jane", "mymodel", "v1"), "jane/mymodel:v1"),
        ("jane/mymodel", (DEFAULT_HOST, "jane", "mymodel", "latest"), "jane/mymodel:latest"),
        ("library/llama3.2:1b", (DEFAULT_HOST, "library", "llama3.2", "1b"), "llama3.2:1b"),
        (
            "registry.ollama.ai/library/qwen2.5:0.5b-instruct-q4_K_M",
            (DEFAULT_HOST, "library", "qwen2.5", "0.5b-instruct-q4_K_M"),
            "qwen2.5:0.5b-instruct-q4_K_M",
        ),
        (
            f"{HF}:Q4_K_M",
            ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
            f"{HF}:Q4_K_M",
        ),
        (HF, ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "latest"), f"{HF}:latest"),
        ("localhost:5000/ns/m:t", ("localhost:5000", "ns", "m", "t"), "localhost:5000/ns/m:t"),
        (
            "localhost:5000/ns/m",
            ("localhost:5000", "ns", "m", "latest"),
            "localhost:5000/ns/m:latest",
        ),
        (
            "example.com/library/m:t",
            ("example.com", "library", "m", "t"),
            "example.com/library/m:t",
        ),
        ("https://hf.co/a/b:c", ("hf.co", "a", "b", "c"), "hf.co/a/b:c"),
        (
            "http://localhost:8080/a/b",
            ("localhost:8080", "a", "b", "latest"),
            "localhost:8080/a/b:latest",
        ),
        (
            "HTTPS://smollm2",
            (DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", "latest"),
            "smollm2:latest",
        ),
        ("Foo/Bar:Baz", (DEFAULT_HOST, "Foo", "Bar", "Baz"), "Foo/Bar:Baz"),
        ("Registry.Ollama.AI/Library/M:T", ("Registry.Ollama.AI", "Library", "M", "T"), "M:T"),
        ("_private", (DEFAULT_HOST, DEFAULT_NAMESPACE, "_private", "latest"), "_private:latest"),
        (
            "a-b_c.d:1.0-x_y",
            (DEFAULT_HOST, DEFAULT_NAMESPACE, "a-b_c.d", "1.0-x_y"),
            "a-b_c.d:1.0-x_y",
        ),
        ("9lives:7", (DEFAULT_HOST, DEFAULT_NAMESPACE, "9lives", "7"), "9lives:7"),
        ("m" * 80 + ":" + "t" * 80, (DEFAULT_HOST, DEFAULT_NAMESPACE, "m" * 80, "t" * 80), None),
        ("h" * 350 + "/n/m", ("h" * 350, "n", "m", "latest"), None),
    ],
)
def test_parse_valid(text: str, parts: tuple[str, str, str, str], display: str | None) -> None:
    n = ModelName.parse(text)
    assert (n.host, n.namespace, n.model, n.tag) == parts
    assert str(n) == "{}/{}/{}:{}".format(*parts)
    if display is not None:
        assert n.display == display
    assert ModelName.parse(n.display) == n
    assert ModelName.parse(str(n)) == n
    assert ModelName.from_parts(*parts) == n


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the model part is empty"),
        ("a/b/c/d", "at most host/namespace/model:tag"),
        ("a/b/c/d/e", 'invalid model name "a/b/c/d/e": at most host/namespace/model:tag'),
        ("..", "the model part must start with a letter, digit or '_'"),
        (".", "the model part must start with a letter, digit or '_'"),
        (".hidden", "must start with a letter, digit or '_'"),
        ("/abs", "the namespace part is empty"),
        ("/abs/m", "the host part is empty"),
        ("a/../b", "the namespace part must start with a letter, digit or '_'"),
        ("../m", "the namespace part must start"),
        ("h/../m", "the namespace part must start"),
        ("../n/m", "the host part must start"),
        ("m/..", "the model part must start"),
        ("m:..", "the tag part must start"),
        ("a//b", "the namespace part is empty"),
        (":tag", "the model part is empty"),
        ("model:", "the tag part is empty"),
        ("a/", "the model part is empty"),
        ("a\x00b", 'invalid model name "a\\x00b": the model part may contain only'),
        ("a\nb", '"a\\nb"'),
        ("m:t\x7f", '"m:t\\x7f"'),
        ("a b", "the model part may contain only letters, digits, '_', '-' and '.'"),
        (" a", "the model part must start with a letter, digit or '_'"),
        ("a\\b", 'invalid model name "a\\\\b"'),
        ('a"b', 'invalid model name "a\\"b"'),
        ("Ab@c", 'invalid model name "Ab@c": the model part may contain only letters, digits'),
        ("m@sha256:abc", "the model part may contain only"),
        ("café", "the model part may contain only"),
        ("ns/mödel", "the model part may contain only"),
        ("n.s/m", "the namespace part may contain only letters, digits, '_' and '-'"),
        ("n:s/m", "the namespace part may contain only"),
        ("a:b:c", "the model part may contain only"),
        ("h/n/m:t:u", "the model part may contain only"),
        ("h@x/n/m", "the host part may contain only letters, digits, '_', '-', '.' and ':'"),
        ("m" * 81, "the model is longer than 80 characters"),
        ("m:" + "t" * 81, "the tag is longer than 80 characters"),
        ("n" * 81 + "/m", "the namespace is longer than 80 characters"),
        ("h" * 351 + "/n/m", "the host is longer than 350 characters"),
        ("https://", "the model part is empty"),
        ("http://http://m", "the namespace part is empty"),
        ("ftp://m", "the namespace part is empty"),
        ("m:t/x", "the namespace part may contain only"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidName) as info:
        ModelName.parse(text)
    assert fragment in str(info.value)
    assert str(info.value).startswith("invalid model name ")
    assert isinstance(info.value, InvalidRequest) and info.value.status == 400


def test_error_message_is_truncated_and_printable() -> None:
    with pytest.raises(InvalidName) as info:
        ModelName.parse("\x01" * 10_000)
    message = str(info.value)
    assert len(message) < 2_000
    assert message.isprintable()


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidName, match="expected a string"):
        ModelName.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parts", "fragment"),
    [
        (("", "n", "m", "t"), "the host part is empty"),
        (("h", "..", "m", "t"), "the namespace part must start"),
        (("h", "n", "m/x", "t"), "the model part may contain only"),
        (("h", "n", "m", "t:u"), "the tag part may contain only"),
        (("h", "n", "m", None), "the tag part must be a string"),
    ],
)
def test_from_parts_and_constructor_validate(
    parts: tuple[str, str, str, str], fragment: str
) -> None:
    with pytest.raises(InvalidName, match=fragment):
        ModelName.from_parts(*parts)
    with pytest.raises(InvalidName, match=fragment):
        ModelName(*parts)
    with pytest.raises(InvalidName, match=fragment):
        fields = ("host", "namespace", "model", "tag")
        dataclasses.replace(ModelName.parse("h/n/m:t"), **dict(zip(fields, parts, strict=True)))


def test_frozen() -> None:
    n = ModelName.parse("m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.tag = ".."  # type: ignore[misc]


def test_case_insensitive_equality_hash_and_filepath() -> None:
    a = ModelName.parse("Foo:Latest")
    b = ModelName.parse("foo:latest")
    c = ModelName.parse("REGISTRY.OLLAMA.AI/LIBRARY/FOO")
    assert a == b == c
    assert hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    assert a.model == "Foo" and a.tag == "Latest"  # display keeps the case as given
    assert a.display == "Foo:Latest"
    assert a.filepath() == b.filepath() == PurePosixPath("registry.ollama.ai/library/foo/latest")
    hf = ModelName.parse("HF.co/Bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    assert hf.filepath() == PurePosixPath("hf.co/bartowski/llama-3.2-1b-instruct-gguf/q4_k_m")
    assert a != ModelName.parse("foo:other")
    assert a != "foo:latest"


def test_filepath_round_trip() -> None:
    n = ModelName.parse("localhost:5000/ns/m:t")
    assert n.filepath() == PurePosixPath("localhost:5000", "ns", "m", "t")
    assert not n.filepath().is_absolute()
    assert ModelName.from_filepath(n.filepath()) == n
    assert ModelName.from_filepath("localhost:5000/ns/m/t") == n


@pytest.mark.parametrize(
    ("rel", "fragment"),
    [
        ("h/n/m", "must be relative host/namespace/model/tag"),
        ("h/n/m/t/x", "must be relative host/namespace/model/tag"),
        ("/h/n/m", "must be relative"),
        (PurePosixPath("/h/n/m"), "must be relative"),
        ("h//n/m/t", "must be relative"),
        ("h/./m/t", "the namespace part must start"),
        (PurePosixPath("h/n/../t"), "the model part must start"),
        ("h/n/m/t:x", "the tag part may contain only"),
        ("h/n.s/m/t", "the namespace part may contain only"),
    ],
)
def test_from_filepath_invalid(rel: PurePosixPath | str, fragment: str) -> None:
    with pytest.raises(InvalidName, match=fragment):
        ModelName.from_filepath(rel)


# Valid name characters plus the separators and the characters that must be rejected.
ALPHABET = list("aZ9_-.:/") * 3 + ["\x00", " ", "\\", "@", "é", "ß", "\u202e", "\n", "A"]
# Mostly valid characters, so that many multi-part names get through.
PART_ALPHABET = list("abcXYZ019_") * 8 + list("-.") * 3 + [":", "\x00", " ", "é", "/"]


def check_round_trip(text: str) -> None:
    """Either `text` is rejected with InvalidName, or its name round-trips and its path is safe."""
    try:
        n = ModelName.parse(text)
    except InvalidName:
        return
    assert ModelName.parse(str(n)) == n
    assert ModelName.parse(n.display) == n
    path = n.filepath()
    assert not path.is_absolute()
    assert len(path.parts) == 4
    assert all(p not in ("", ".", "..") for p in path.parts)
    assert all("/" not in p and p.isascii() and p.isprintable() for p in path.parts)
    assert ModelName.from_filepath(path) == n
    assert ModelName.from_filepath(str(path)) == n


def random_name(rng: random.Random) -> str:
    """Half raw strings over ALPHABET, half `/`-joined parts, so all three forms come up often."""
    if rng.random() < 0.5:
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24)))
    else:

        def part() -> str:
            size = rng.randint(1, 8) if rng.random() < 0.95 else 0
            return "".join(rng.choice(PART_ALPHABET) for _ in range(size))

        text = "/".join(part() for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.6:
            text += ":" + part()
    if rng.random() < 0.1:
        text = rng.choice(["http://", "https://", "HTTP://"]) + text
    return text


def test_seeded_random_round_trip() -> None:
    rng = random.Random(1234)
    accepted = []
    for _ in range(5000):
        text = random_name(rng)
        check_round_trip(text)
        try:
            accepted.append(ModelName.parse(text))
        except InvalidName:
            pass
    # The generator must exercise both sides and every form, or the test proves little.
    assert 500 < len(accepted) < 4500
    assert any(n.host != DEFAULT_HOST for n in accepted)
    assert any(":" in n.host for n in accepted)
    assert any(n.namespace != DEFAULT_NAMESPACE and n.host == DEFAULT_HOST for n in accepted)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(ALPHABET), max_size=30))
def test_hypothesis_round_trip(text: str) -> None:
    check_round_trip(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_hypothesis_arbitrary_text(text: str) -> None:
    check_round_trip(text)
