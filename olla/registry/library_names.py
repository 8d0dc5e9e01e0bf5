"""Where a pull's name points: Ollama's registry (its library), another registry, or Hugging Face.

As Ollama reads a name (`types/model/name.go`): without a host it is on `registry.ollama.ai`,
in namespace `library` unless one is given, tag `latest` unless one is given, so `llama3.2`,
`library/qwen3:4b` and `someone/model:tag` are all names on Ollama's registry; olla asks the
registry `OLLA_REGISTRY` names for them (Ollama's by default, or a mirror) and stores them under
`registry.ollama.ai`, as Ollama does, so `olla run llama3.2` finds them either way. A name with a
host (`example.com:5000/ns/model:tag`) is pulled from that host over https, or over http when the
pull is insecure. `hf.co/...` and `huggingface.co/...` stay Hugging Face names.

Plain http is refused unless the host is this machine (a test registry on loopback) or the pull
says `insecure`, as Ollama refuses an `http://` name without it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from olla.errors import InvalidRequest
from olla.registry.catalog import HF_HOSTS, Origin, resolve_hub
from olla.registry.names import DEFAULT_HOST, ModelName

DEFAULT_REGISTRY = f"https://{DEFAULT_HOST}"


@dataclass(frozen=True)
class LibraryRef:
    """A model on an Ollama-protocol registry: the name it is stored under and where it is."""

    name: ModelName
    base_url: str  # scheme://host[:port][/prefix], no trailing '/'

    @property
    def repository(self) -> str:
        """`namespace/model`, as the registry's paths spell it (lower case, as Ollama's store)."""
        return f"{self.name.namespace.lower()}/{self.name.model.lower()}"

    def manifest_url(self) -> str:
        return f"{self.base_url}/v2/{self.repository}/manifests/{quote(self.name.tag)}"

    def blob_url(self, digest: str) -> str:
        return f"{self.base_url}/v2/{self.repository}/blobs/{digest}"

    @property
    def where(self) -> str:
        """The model as messages name it: its name and, for a mirror, the registry asked."""
        shown = self.name.display
        if self.base_url != f"https://{self.name.host.lower()}":
            shown += f" (from {self.base_url})"
        return shown


PullSource = Origin | LibraryRef


def resolve_pull(text: str, registry_url: str, insecure: bool) -> tuple[ModelName, PullSource]:
    """The name a pull is stored under and where it comes from: a Hugging Face `Origin` for
    `hf.co/...`, else a `LibraryRef`. InvalidRequest for plain http without `insecure`."""
    scheme, rest = _split_scheme(text)
    name = ModelName.parse(rest)
    if name.host.lower() in HF_HOSTS:
        return resolve_hub(rest)
    if name.host.lower() == DEFAULT_HOST:
        base = registry_url.rstrip("/") if scheme is None else f"{scheme}://{DEFAULT_HOST}"
    else:
        base = f"{scheme or ('http' if insecure else 'https')}://{name.host.lower()}"
    _check_scheme(base, insecure, text)
    return name, LibraryRef(name, base)


def _split_scheme(text: str) -> tuple[str | None, str]:
    """An explicit `http://` or `https://` off the front of a name (Ollama's ProtocolScheme)."""
    if not isinstance(text, str):
        return None, text
    for scheme in ("http", "https"):
        if text[: len(scheme) + 3].lower() == f"{scheme}://":
            return scheme, text[len(scheme) + 3 :]
    return None, text


def _check_scheme(base: str, insecure: bool, text: str) -> None:
    parts = urlsplit(base)
    if parts.scheme == "http" and not insecure and not is_loopback(parts.hostname or ""):
        raise InvalidRequest(
            f'insecure protocol http for {text}: pull with --insecure ("insecure": true) to '
            f"allow plain http to {parts.netloc}"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: `localhost` or a loopback address."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
