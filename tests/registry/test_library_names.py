"""Where a pull's name points: Ollama's registry (or OLLA_REGISTRY), another host, Hugging Face."""

from __future__ import annotations

import pytest

from olla.config import load_settings
from olla.errors import ConfigError, InvalidName, InvalidRequest
from olla.registry.catalog import Origin
from olla.registry.library_names import DEFAULT_REGISTRY, LibraryRef, resolve_pull

MIRROR = "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("text", "stored", "manifest_url"),
    [
        (
            "llama3.2",
            "registry.ollama.ai/library/llama3.2:latest",
            "https://registry.ollama.ai/v2/library/llama3.2/manifests/latest",
        ),
        (
            "llama3.2:1b",
            "registry.ollama.ai/library/llama3.2:1b",
            "https://registry.ollama.ai/v2/library/llama3.2/manifests/1b",
        ),
        (
            "library/qwen3:4b",
            "registry.ollama.ai/library/qwen3:4b",
            "https://registry.ollama.ai/v2/library/qwen3/manifests/4b",
        ),
        (
            "someone/Model:Q4",
            "registry.ollama.ai/someone/Model:Q4",
            "https://registry.ollama.ai/v2/someone/model/manifests/Q4",
        ),
        (
            "smollm2:135m",  # once a catalog name for a Hugging Face repo: Ollama's library has it
            "registry.ollama.ai/library/smollm2:135m",
            "https://registry.ollama.ai/v2/library/smollm2/manifests/135m",
        ),
        (
            "example.com:5000/ns/model:tag",
            "example.com:5000/ns/model:tag",
            "https://example.com:5000/v2/ns/model/manifests/tag",
        ),
    ],
)
def test_names_without_a_host_go_to_ollamas_registry_as_ollama_resolves_them(
    text: str, stored: str, manifest_url: str
) -> None:
    name, source = resolve_pull(text, DEFAULT_REGISTRY, insecure=False)
    assert isinstance(source, LibraryRef)
    assert (str(name), source.manifest_url()) == (stored, manifest_url)
    assert source.blob_url("sha256:" + "a" * 64).startswith(manifest_url.split("/manifests")[0])


def test_olla_registry_points_names_without_a_host_at_a_mirror_stored_as_ollamas() -> None:
    name, source = resolve_pull("llama3.2", MIRROR + "/", insecure=False)
    assert isinstance(source, LibraryRef)
    assert str(name) == "registry.ollama.ai/library/llama3.2:latest"
    assert source.manifest_url() == f"{MIRROR}/v2/library/llama3.2/manifests/latest"
    # an explicit host is that host, whatever OLLA_REGISTRY says
    _, other = resolve_pull("example.com/ns/m", MIRROR, insecure=False)
    assert isinstance(other, LibraryRef) and other.base_url == "https://example.com"


def test_plain_http_needs_insecure_unless_the_registry_is_on_loopback() -> None:
    with pytest.raises(InvalidRequest, match="insecure"):
        resolve_pull("llama3.2", "http://mirror.example.com", insecure=False)
    with pytest.raises(InvalidRequest, match="--insecure"):
        resolve_pull("http://example.com/ns/model:tag", DEFAULT_REGISTRY, insecure=False)
    _, source = resolve_pull("llama3.2", "http://mirror.example.com", insecure=True)
    assert isinstance(source, LibraryRef) and source.base_url == "http://mirror.example.com"
    _, source = resolve_pull("example.com/ns/model", DEFAULT_REGISTRY, insecure=True)
    assert isinstance(source, LibraryRef) and source.base_url == "http://example.com"
    _, source = resolve_pull("http://localhost:8080/ns/model", DEFAULT_REGISTRY, insecure=False)
    assert isinstance(source, LibraryRef) and source.base_url == "http://localhost:8080"


def test_hugging_face_names_stay_on_hugging_face() -> None:
    name, source = resolve_pull("huggingface.co/owner/Repo-GGUF:q8_0", MIRROR, insecure=False)
    assert (str(name), source) == ("hf.co/owner/Repo-GGUF:q8_0", Origin("owner/Repo-GGUF", "q8_0"))
    with pytest.raises(InvalidName):
        resolve_pull("a/b/c/d", DEFAULT_REGISTRY, insecure=False)


def test_olla_registry_is_a_base_url() -> None:
    assert load_settings(environ={}).registry == "https://registry.ollama.ai"
    got = load_settings(environ={"OLLA_REGISTRY": "http://127.0.0.1:9/"}).registry
    assert got == "http://127.0.0.1:9"
    for bad in ("registry.ollama.ai", "ftp://x", "https://"):
        with pytest.raises(ConfigError, match="OLLA_REGISTRY"):
            load_settings(environ={"OLLA_REGISTRY": bad})
