"""Turning a chat into the prompt text a model expects, with its template and SYSTEM/MESSAGE."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olla.errors import InvalidRequest
from olla.registry.describe import capabilities
from olla.registry.gguf_info import read_gguf_info
from olla.registry.model_dir import chat_format
from olla.registry.store import ResolvedModel
from olla.templates import ChatMessage, render_insert, render_prompt


@dataclass(frozen=True)
class ChatFormat:
    """What a model says about chat formatting: its Jinja template and BOS/EOS token texts."""

    chat_template: str | None
    bos_token: str
    eos_token: str


class ChatFormats:
    """Reads each model's chat format once (reading GGUF metadata takes ~0.2 s)."""

    def __init__(self) -> None:
        self._cache: dict[Path, ChatFormat] = {}
        self._lock = threading.Lock()

    def get(self, model_path: Path) -> ChatFormat:
        with self._lock:
            cached = self._cache.get(model_path)
        if cached is not None:
            return cached
        if model_path.is_dir():  # a directory model: its tokenizer_config.json
            fmt = ChatFormat(*chat_format(model_path))
        else:
            info = read_gguf_info(model_path)
            tokens = info.metadata.get("tokenizer.ggml.tokens")
            fmt = ChatFormat(
                chat_template=info.chat_template,
                bos_token=_token_text(tokens, info.metadata.get("tokenizer.ggml.bos_token_id")),
                eos_token=_token_text(tokens, info.metadata.get("tokenizer.ggml.eos_token_id")),
            )
        with self._lock:
            self._cache[model_path] = fmt
        return fmt


def _token_text(tokens: object, token_id: object) -> str:
    if isinstance(tokens, list) and isinstance(token_id, int) and 0 <= token_id < len(tokens):
        return str(tokens[token_id])
    return ""


def chat_prompt(
    model: ResolvedModel,
    fmt: ChatFormat,
    messages: Sequence[ChatMessage],
    system: str | None = None,
    template: str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt for `messages` after the model's MESSAGEs, with SYSTEM unless overridden;
    `tools` are offered through the template (InvalidRequest if it has no place for them)."""
    source = template if template is not None else model.template
    if tools and "tools" not in capabilities(source or fmt.chat_template):
        raise InvalidRequest(
            f"{model.entry.name.display} does not support tools: its template has no place "
            "for them; use a model whose template offers tools (`olla show --template`)"
        )
    return render_prompt(
        template_source=source,
        chat_template=fmt.chat_template,
        messages=[*model.messages, *messages],
        system=system if system is not None else model.system,
        bos_token=fmt.bos_token,
        eos_token=fmt.eos_token,
        tools=tools or None,
    )


def insert_prompt(
    model: ResolvedModel, prompt: str, suffix: str, system: str | None, template: str | None
) -> str:
    """Fill-in-the-middle: a template with `.Suffix` (Ollama's "insert" capability)."""
    source = template if template is not None else model.template
    if not source or "insert" not in capabilities(source):
        raise InvalidRequest(
            f'field "suffix": {model.entry.name.display} does not support insert: its template '
            "has no .Suffix (use a code model whose template does)"
        )
    return render_insert(source, prompt, suffix, system if system is not None else model.system)


def model_path(model: ResolvedModel) -> Path:
    """The model's file, for its chat format; 400 for a model without one."""
    if model.model_path is None:
        raise InvalidRequest(f"model {model.entry.name.display} has no model file")
    return model.model_path
