"""Chat values shared by the daemon, the runner and the client: a message, and request
options typed as Ollama types them (a Modelfile's PARAMETER lines and an API's `options`)."""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias

from olla.errors import InvalidRequest

PARAMETER_TYPES: Mapping[str, type] = MappingProxyType(
    {
        # sampling options
        "num_keep": int,
        "seed": int,
        "num_predict": int,
        "top_k": int,
        "top_p": float,
        "min_p": float,
        "typical_p": float,
        "repeat_last_n": int,
        "temperature": float,
        "repeat_penalty": float,
        "presence_penalty": float,
        "frequency_penalty": float,
        "penalize_newline": bool,
        "mirostat": int,
        "mirostat_tau": float,
        "mirostat_eta": float,
        "tfs_z": float,
        "stop": str,
        # runner options
        "num_ctx": int,
        "num_batch": int,
        "num_gpu": int,
        "main_gpu": int,
        "low_vram": bool,
        "f16_kv": bool,
        "logits_all": bool,
        "vocab_only": bool,
        "use_mmap": bool,
        "use_mlock": bool,
        "num_thread": int,
        "numa": bool,
        "draft_num_predict": int,  # Ollama's draft model tokens; olla has no draft models yet
        # olla's own: how the KV cache is stored, and flash attention (true, false or auto)
        "kv_cache_type": str,
        "flash_attention": str,
    }
)

MAX_TOP_LOGPROBS = 20  # alternatives one token may report, as OpenAI

ParamValue: TypeAlias = int | float | bool | str | list[str]

# Strict ASCII forms: Python's int()/float() also take "1_000", "inf" and non-ASCII digits.
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EXPECTED = MappingProxyType(
    {int: "an integer", float: "a number", bool: "true or false", str: "a non-empty string"}
)


@dataclass(frozen=True)
class ThinkSetting:
    """Whether a request has the model reason first, and how hard: what templates see as
    `.Think`, `.ThinkLevel` and `.IsThinkSet` (Go) or `enable_thinking` and `reasoning_effort`
    (Jinja)."""

    enabled: bool = False
    level: str = ""  # "low" | "medium" | "high"; "" when none was asked
    set: bool = False  # asked for, or the model's default (on for a model that thinks)


@dataclass(frozen=True)
class Message:
    """One MESSAGE of the conversation history a model starts with."""

    role: str
    content: str


class ParameterError(ValueError):
    """A bad parameter; the caller decides whether it is a Modelfile or a request error."""


def parameter_name(name: str) -> str:
    """The lowercase parameter name; ParameterError if it is not one Ollama knows."""
    low = name.lower()
    if low in PARAMETER_TYPES:
        return low
    close = difflib.get_close_matches(low, list(PARAMETER_TYPES), n=1)
    hint = f'did you mean "{close[0]}"?' if close else "known: " + ", ".join(PARAMETER_TYPES)
    raise ParameterError(f'unknown parameter "{name}" ({hint})')


def typed_parameter(name: str, value: object) -> int | float | bool | str:
    """`value` (text, or an already typed JSON value) as the type of parameter `name`."""
    kind = PARAMETER_TYPES[name]
    text = value.strip() if isinstance(value, str) and kind is not str else value
    if kind is str and isinstance(value, str) and value:
        return value
    if kind is str and isinstance(value, bool):  # flash_attention: true
        return "true" if value else "false"
    if kind is bool:
        if isinstance(text, str) and text.lower() in ("true", "1", "false", "0"):
            return text.lower() in ("true", "1")
        if isinstance(text, int) and text in (0, 1):  # a JSON true/false is an int here too
            return bool(text)
    elif isinstance(text, str):
        if kind is int and _INT_RE.fullmatch(text):
            return int(text)
        if kind is float and _FLOAT_RE.fullmatch(text) and math.isfinite(float(text)):
            return float(text)
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        if kind is int and (isinstance(text, int) or text.is_integer()):
            return int(text)
        if kind is float and abs(text) <= sys.float_info.max:  # math.isfinite overflows on big ints
            return float(text)
    shown = json.dumps(value, ensure_ascii=False, default=repr)
    raise ParameterError(f"invalid value {shown} for parameter {name}: expected {_EXPECTED[kind]}")


def coerce_parameter(name: str, value: object) -> ParamValue:
    """Type one API parameter (typed or text); `stop` takes a string or a list of strings."""
    try:
        key = parameter_name(name)
        if key == "stop" and isinstance(value, (list, tuple)):
            return [str(typed_parameter(key, item)) for item in value]
        typed = typed_parameter(key, value)
    except ParameterError as e:
        raise InvalidRequest(str(e)) from None
    return [str(typed)] if key == "stop" else typed


def known_options(options: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
    """A request's options without those Ollama does not know, and their names: Ollama ignores
    an unknown option (with a warning), so clients send newer ones to any server."""
    unknown = [name for name in options if name.lower() not in PARAMETER_TYPES]
    return {k: v for k, v in options.items() if k not in unknown}, unknown


def coerce_parameters(params: Mapping[str, object]) -> dict[str, ParamValue]:
    """Type an API `parameters`/`options` object; null values are left out, stops are merged."""
    out: dict[str, ParamValue] = {}
    for name, value in params.items():
        if value is None:
            continue
        typed = coerce_parameter(name, value)
        key = name.lower()
        if key == "stop":
            previous = out.get("stop", [])
            assert isinstance(previous, list) and isinstance(typed, list)
            out["stop"] = [*previous, *typed]
        else:
            out[key] = typed
    return out
