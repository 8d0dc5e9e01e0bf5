"""Model names, `[scheme://][host/][namespace/]model[:tag]`, as Ollama spells them.

`ModelName` is the only parser of names; every instance is valid, so its `filepath()` can be
joined under the manifest directory without escaping it. Names compare case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType

from olla.errors import InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# As Ollama's isValidPart: the first character can never be '.', so '.' and '..' cannot be parts.
_FIRST = re.compile(r"[A-Za-z0-9_]")
_RULES: Mapping[str, tuple[int, re.Pattern[str], str]] = MappingProxyType(
    {
        "host": (350, re.compile(r"[A-Za-z0-9_.:-]*"), "letters, digits, '_', '-', '.' and ':'"),
        "namespace": (80, re.compile(r"[A-Za-z0-9_-]*"), "letters, digits, '_' and '-'"),
        "model": (80, re.compile(r"[A-Za-z0-9_.-]*"), "letters, digits, '_', '-' and '.'"),
        "tag": (80, re.compile(r"[A-Za-z0-9_.-]*"), "letters, digits, '_', '-' and '.'"),
    }
)
_KINDS = ("host", "namespace", "model", "tag")
_SCHEMES = ("http://", "https://")
_MAX_QUOTED = 400  # an error message need not echo a megabyte of garbage


def _quote(s: str) -> str:
    """`s` in double quotes, with quotes, backslashes and unprintable characters escaped."""
    cut = s[:_MAX_QUOTED]
    body = "".join(
        "\\" + c if c in '"\\' else c if c.isprintable() else c.encode("unicode_escape").decode()
        for c in cut
    )
    return f'"{body}"' + ("..." if len(s) > _MAX_QUOTED else "")


def _fail(shown: str, problem: str) -> InvalidName:
    return InvalidName(f"invalid model name {_quote(shown)}: {problem}")


def _check(kind: str, value: str, shown: str) -> None:
    """Raise InvalidName, quoting `shown`, unless `value` is a valid `kind` part."""
    limit, allowed, described = _RULES[kind]
    if not isinstance(value, str):
        raise _fail(shown, f"the {kind} part must be a string, not {type(value).__name__}")
    if not value:
        raise _fail(shown, f"the {kind} part is empty")
    if len(value) > limit:
        raise _fail(shown, f"the {kind} is longer than {limit} characters")
    if not _FIRST.match(value):
        raise _fail(shown, f"the {kind} part must start with a letter, digit or '_'")
    if not allowed.fullmatch(value):
        raise _fail(shown, f"the {kind} part may contain only {described}")


@dataclass(frozen=True, eq=False)
class ModelName:
    """A validated `host/namespace/model:tag`; case is kept for display, ignored in comparisons."""

    host: str
    namespace: str
    model: str
    tag: str

    def __post_init__(self) -> None:
        shown = f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        for kind in _KINDS:
            _check(kind, getattr(self, kind), shown)

    @classmethod
    def parse(cls, s: str) -> ModelName:
        """Parse a user-given name, filling Ollama's defaults; InvalidName if it is not valid."""
        if not isinstance(s, str):
            raise InvalidName(f"invalid model name: expected a string, got {type(s).__name__}")
        rest = s
        for scheme in _SCHEMES:
            if rest[: len(scheme)].lower() == scheme:
                rest = rest[len(scheme) :]
                break
        parts = rest.split("/")
        if len(parts) > 3:
            raise _fail(s, "at most host/namespace/model:tag")
        # Only the last part holds the tag: a colon further left is a host's port.
        model, colon, tag = parts[-1].rpartition(":")
        if not colon:
            model, tag = tag, DEFAULT_TAG
        host = parts[-3] if len(parts) == 3 else DEFAULT_HOST
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        for kind, value in zip(_KINDS, (host, namespace, model, tag), strict=True):
            _check(kind, value, s)
        return cls(host, namespace, model, tag)

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str) -> ModelName:
        """A name from its four parts, each validated; InvalidName if one is not valid."""
        return cls(host, namespace, model, tag)

    @classmethod
    def from_filepath(cls, rel: PurePosixPath | str) -> ModelName:
        """The inverse of `filepath()`: a relative `host/namespace/model/tag` path."""
        text = str(rel)
        # A str is split by hand so that 'a//b' or 'a/./b' is not silently normalised away.
        parts = text.split("/") if isinstance(rel, str) else list(PurePosixPath(rel).parts)
        if len(parts) != 4 or text.startswith("/"):
            raise _fail(text, "a manifest path must be relative host/namespace/model/tag")
        for kind, value in zip(_KINDS, parts, strict=True):
            _check(kind, value, text)
        return cls(*parts)

    def _key(self) -> tuple[str, str, str, str]:
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelName):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def display(self) -> str:
        """The shortest form that parses back to this name; it always includes the tag."""
        short = f"{self.model}:{self.tag}"
        if self.host.lower() != DEFAULT_HOST:
            return str(self)
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{short}"
        return short

    def filepath(self) -> PurePosixPath:
        """The lowercased relative path `host/namespace/model/tag`, as Ollama lays out manifests."""
        return PurePosixPath(*self._key())
