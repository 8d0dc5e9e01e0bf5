"""Which repository and file a pull takes, and how `olla pull` prints progress."""

from __future__ import annotations

import pytest

from olla.errors import InvalidName, NotFound
from olla.progress import PullProgress
from olla.registry.catalog import Origin, resolve_hub
from olla.registry.pull_plan import RemoteFile, choose_gguf


def files(*names: str) -> list[RemoteFile]:
    return [RemoteFile(n, 100, "ab" * 32) for n in names]


REPO = files(
    "SmolLM2-135M-Instruct-Q4_K_M.gguf",
    "SmolLM2-135M-Instruct-Q8_0.gguf",
    "SmolLM2-135M-Instruct-q4_k_s.gguf",
    "mmproj-SmolLM2-f16.gguf",
)


@pytest.mark.parametrize(
    ("text", "stored", "origin"),
    [
        (
            "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF",
            "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:latest",
            Origin("bartowski/SmolLM2-135M-Instruct-GGUF", ""),
        ),
        (
            "huggingface.co/bartowski/SmolLM2-135M-Instruct-GGUF:q8_0",
            "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:q8_0",
            Origin("bartowski/SmolLM2-135M-Instruct-GGUF", "q8_0"),
        ),
    ],
)
def test_names_resolve_to_a_repository_and_a_selector(
    text: str, stored: str, origin: Origin
) -> None:
    name, got = resolve_hub(text)
    assert (str(name), got) == (stored, origin)


def test_only_hugging_face_names_are_hugging_face_pulls() -> None:
    # short names (smollm2:135m) are Ollama registry names now: tests/registry/test_library_names
    with pytest.raises(InvalidName, match="not a Hugging Face name"):
        resolve_hub("smollm2:135m")


@pytest.mark.parametrize(
    ("selector", "chosen"),
    [
        ("", "SmolLM2-135M-Instruct-Q4_K_M.gguf"),
        ("Q8_0", "SmolLM2-135M-Instruct-Q8_0.gguf"),
        ("Q4_K_S", "SmolLM2-135M-Instruct-q4_k_s.gguf"),
        ("SmolLM2-135M-Instruct-Q8_0.gguf", "SmolLM2-135M-Instruct-Q8_0.gguf"),
    ],
)
def test_a_tag_picks_the_file_by_quantization_or_name(selector: str, chosen: str) -> None:
    [got] = choose_gguf(REPO, Origin("o/r", selector))
    assert got.path == chosen


def test_without_q4_k_m_the_default_falls_back_and_a_missing_quant_lists_the_files() -> None:
    [got] = choose_gguf(files("m-Q8_0.gguf", "m-F16.gguf"), Origin("o/r", ""))
    assert got.path == "m-Q8_0.gguf"
    with pytest.raises(NotFound) as info:
        choose_gguf(REPO, Origin("o/r", "IQ2_XS"))
    assert info.value.status == 404 and "SmolLM2-135M-Instruct-Q8_0.gguf" in str(info.value)
    assert "mmproj" not in str(info.value)


def test_a_split_gguf_is_pulled_whole_in_order() -> None:
    parts = files(
        "big-Q4_K_M-00002-of-00003.gguf",
        "big-Q4_K_M-00001-of-00003.gguf",
        "big-Q4_K_M-00003-of-00003.gguf",
        "big-Q8_0.gguf",
    )
    got = choose_gguf(parts, Origin("o/r", ""))
    assert [f.path for f in got] == [f"big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with pytest.raises(NotFound, match="lacks parts"):
        choose_gguf(parts[:2], Origin("o/r", ""))


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    lines = [
        {"status": "pulling manifest"},
        {"status": "pulling abc", "digest": "sha256:abc", "total": 1000, "completed": 0},
        {"status": "pulling abc", "digest": "sha256:abc", "total": 1000, "completed": 500},
        {"status": "pulling abc", "digest": "sha256:abc", "total": 1000, "completed": 1000},
        {"status": "verifying sha256 digest"},
        {"status": "success"},
    ]
    plain: list[str] = []
    p = PullProgress(write=plain.append, tty=False)
    for line in lines:
        p.show(line)
    assert "".join(plain).splitlines() == [
        "pulling manifest",
        "pulling abc: 1.0 KB",
        "pulling abc: 1.0 KB done",
        "verifying sha256 digest",
        "success",
    ]
    ticks = iter([0.0, 2.0, 2.5])
    shown: list[str] = []
    bar = PullProgress(write=shown.append, tty=True, clock=lambda: next(ticks))
    for line in lines:
        bar.show(line)
    text = "".join(shown)
    assert "\r" in text and "50% ▕" in text and "250 B/s" in text and "2s" in text
    assert text.endswith("success\n")
