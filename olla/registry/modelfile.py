"""Ollama's Modelfile format: parse into a `Modelfile` and serialize it back.

`parse(serialize(m)) == m` holds for every `m` that `parse` produced. Triple-quoted values are
kept verbatim (no escapes; a newline right after the opener is part of the value), as in Ollama.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from olla.chat import Message, ParameterError, ParamValue, parameter_name, typed_parameter
from olla.errors import ModelfileError

MESSAGE_ROLES = ("user", "assistant", "system")
_USAGE = MappingProxyType(
    {
        "FROM": "FROM <model name, path or digest>",
        "PARAMETER": "PARAMETER <name> <value>",
        "TEMPLATE": "TEMPLATE <template>",
        "SYSTEM": "SYSTEM <system prompt>",
        "ADAPTER": "ADAPTER <path or digest>",
        "LICENSE": "LICENSE <text>",
        "MESSAGE": "MESSAGE <role> <content>",
    }
)
_ESCAPES = MappingProxyType({'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"})
# `\r` is escaped too, so serialized text never holds a raw CR that newline translation could eat.
_ESCAPE_TABLE = MappingProxyType(
    str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"})
)


@dataclass
class Modelfile:
    """A parsed Modelfile; `parameters["stop"]` is a list, other parameters are scalars.

    `from_` is the first FROM, `more_from` the later ones: as in Ollama, a model and its vision
    projector are two FROM lines, in either order, told apart by their files at create.
    """

    from_: str
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    adapters: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    more_from: list[str] = field(default_factory=list)


def parse(text: str) -> Modelfile:
    """Parse Modelfile text; raises ModelfileError naming the line and what to fix."""
    if "\0" in text:
        nul_line = text.count("\n", 0, text.index("\0")) + 1
        raise ModelfileError(
            "NUL byte in the Modelfile: remove it (is this a binary file?)", nul_line
        )
    lines = text.replace("\r\n", "\n").split("\n")
    mf, from_line, i = Modelfile(from_=""), 0, 0
    while i < len(lines):
        lineno, line = i + 1, lines[i].lstrip()
        if not line or line.startswith("#"):
            i += 1
            continue
        word, rest = _split_word(line)
        instr = word.upper()
        if instr not in _USAGE:
            valid = ", ".join(_USAGE)
            raise ModelfileError(f'unknown instruction "{word}": use one of {valid}', lineno)
        key = ""
        if instr in ("PARAMETER", "MESSAGE") and rest:
            key, rest = _split_word(rest)
            _check_key(instr, key, lineno)
        if not rest:
            raise ModelfileError(_missing_value(instr, key), lineno)
        value, i = _read_value(rest, lines, i)
        if instr == "FROM":
            from_line = from_line or lineno
        _apply(mf, instr, key, value, lineno)
    if not from_line:
        raise ModelfileError(
            "no FROM line: a Modelfile must say which model it builds on, e.g. FROM smollm2:135m"
        )
    return mf


def _split_word(text: str) -> tuple[str, str]:
    """The first whitespace-separated word and the rest, its leading whitespace removed."""
    parts = text.split(None, 1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def _missing_value(instr: str, key: str) -> str:
    if key:
        what = "value" if instr == "PARAMETER" else "content"
        return f"{instr} {key} has no {what}: write {instr} {key} <{what}>"
    return f"{instr} has no value: write {_USAGE[instr]}"


def _check_key(instr: str, key: str, lineno: int) -> None:
    """Reject an unknown parameter name or message role before reading the value."""
    if instr == "MESSAGE" and key.lower() not in MESSAGE_ROLES:
        roles = ", ".join(MESSAGE_ROLES)
        raise ModelfileError(f'invalid MESSAGE role "{key}": use one of {roles}', lineno)
    if instr == "PARAMETER":
        try:
            parameter_name(key)
        except ParameterError as e:
            raise ModelfileError(str(e), lineno) from None


def _read_value(rest: str, lines: list[str], i: int) -> tuple[str, int]:
    """The value starting at `rest` (on line index i) and the index of the line after it."""
    if rest.startswith('"""'):
        return _read_triple(rest[3:], lines, i)
    if rest.startswith('"'):
        return _read_quoted(rest[1:], i + 1), i + 1
    return rest.strip(), i + 1


def _read_triple(chunk: str, lines: list[str], start: int) -> tuple[str, int]:
    pieces, j = [], start
    while (end := chunk.find('"""')) < 0:
        pieces.append(chunk)
        j += 1
        if j == len(lines):
            raise ModelfileError(
                'unterminated """: the value opened here needs a closing """', start + 1
            )
        chunk = lines[j]
    pieces.append(chunk[:end])
    _expect_end(chunk[end + 3 :], '"""', j + 1)
    return "\n".join(pieces), j + 1


def _read_quoted(body: str, lineno: int) -> str:
    out: list[str] = []
    k = 0
    while k < len(body):
        ch = body[k]
        if ch == '"':
            _expect_end(body[k + 1 :], '"', lineno)
            return "".join(out)
        if ch == "\\" and k + 1 < len(body):
            # an unknown escape stays as written, so Windows paths like "C:\models" survive
            out.append(_ESCAPES.get(body[k + 1], body[k : k + 2]))
            k += 2
            continue
        out.append(ch)
        k += 1
    raise ModelfileError(
        'unterminated quote: end the value with " on the same line, or use """ for several lines',
        lineno,
    )


def _expect_end(tail: str, closer: str, lineno: int) -> None:
    if tail.strip():
        raise ModelfileError(
            f"unexpected text {tail.strip()!r} after the closing {closer}: "
            "put the whole value inside the quotes",
            lineno,
        )


def _apply(mf: Modelfile, instr: str, key: str, value: str, lineno: int) -> None:
    if instr in ("FROM", "ADAPTER") and not value.strip():
        raise ModelfileError(f"{instr} has an empty value: write {_USAGE[instr]}", lineno)
    if instr == "FROM" and mf.from_:
        mf.more_from.append(value)
    elif instr == "FROM":
        mf.from_ = value
    elif instr == "ADAPTER":
        mf.adapters.append(value)
    elif instr == "TEMPLATE":
        mf.template = value
    elif instr == "SYSTEM":
        mf.system = value
    elif instr == "LICENSE":
        mf.licenses.append(value)
    elif instr == "MESSAGE":
        mf.messages.append(Message(key.lower(), value))
    else:
        name = key.lower()
        try:
            typed = typed_parameter(name, value)
        except ParameterError as e:
            raise ModelfileError(str(e), lineno) from None
        if name == "stop":
            stops = mf.parameters.setdefault("stop", [])
            assert isinstance(stops, list)
            stops.append(str(typed))
        else:
            mf.parameters[name] = typed


def format_parameters(params: Mapping[str, ParamValue]) -> str:
    """Ollama's /api/show `parameters` text: one `name value` line per value, names padded."""
    lines = []
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                shown = json.dumps(item, ensure_ascii=False)
            elif isinstance(item, float) and item.is_integer():
                shown = repr(item).removesuffix(".0")  # Go prints 1.0 as 1
            else:
                shown = _param_text(item)
            lines.append(f"{name:<30} {shown}")
    return "\n".join(lines)


def serialize(mf: Modelfile, header: str | None = None) -> str:
    """Modelfile text for `mf`; `header` becomes `# ` comment lines at the top."""
    out = []
    if header is not None:
        out += [f"# {line}".rstrip() for line in header.split("\n")]
        out.append("")
    out.append(f"FROM {_quote(mf.from_)}")
    out += [f"ADAPTER {_quote(a)}" for a in mf.adapters]
    out += [f"FROM {_quote(value)}" for value in mf.more_from]  # after ADAPTER, as Ollama writes
    if mf.template is not None:
        out.append(f"TEMPLATE {_quote(mf.template)}")
    if mf.system is not None:
        out.append(f"SYSTEM {_quote(mf.system)}")
    for name, value in mf.parameters.items():
        for item in value if isinstance(value, list) else [value]:
            out.append(f"PARAMETER {name} {_param_text(item)}")
    out += [f"MESSAGE {m.role} {_quote(m.content)}" for m in mf.messages]
    out += [f"LICENSE {_quote(text)}" for text in mf.licenses]
    return "\n".join(out) + "\n"


def _param_text(value: int | float | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return repr(value)


def _quote(value: str) -> str:
    """The plainest form that parses back to exactly `value`."""
    single_line = "\n" not in value and "\r" not in value
    if single_line and value and value == value.strip() and value[0] != '"':
        return value
    multiline_ok = '"""' not in value and not value.endswith('"') and "\r" not in value
    if "\n" in value and multiline_ok:
        return f'"""{value}"""'
    return '"' + value.translate(_ESCAPE_TABLE) + '"'
