"""Tests for olla.registry.modelfile: parsing, errors, serialization round trips, parameters."""

from __future__ import annotations

import random

import pytest

from olla.chat import PARAMETER_TYPES, Message, coerce_parameter, coerce_parameters
from olla.errors import InvalidRequest, ModelfileError
from olla.registry.modelfile import (
    Modelfile,
    format_parameters,
    parse,
    serialize,
)

CHATML = (
    "{{ if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    "{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
    "{{ .Response }}<|im_end|>\n"
)

FULL = f'''# A Modelfile for a small chat model
FROM smollm2:135m

  # indented comment, then a blank line

ADAPTER ./lora.gguf
ADAPTER sha256:{"ab" * 32}
TEMPLATE """{CHATML}"""
SYSTEM You are a concise assistant.
PARAMETER num_ctx 4096
PARAMETER temperature 0.7
PARAMETER stop "<|im_start|>"
PARAMETER stop <|im_end|>
PARAMETER use_mmap true
MESSAGE user Is Rome in Italy?
MESSAGE assistant "Yes."
LICENSE """Apache License
Version 2.0"""
LICENSE MIT
'''


def test_parses_every_instruction() -> None:
    mf = parse(FULL)
    assert mf == Modelfile(
        from_="smollm2:135m",
        parameters={
            "num_ctx": 4096,
            "temperature": 0.7,
            "stop": ["<|im_start|>", "<|im_end|>"],
            "use_mmap": True,
        },
        template=CHATML,
        system="You are a concise assistant.",
        adapters=["./lora.gguf", "sha256:" + "ab" * 32],
        licenses=["Apache License\nVersion 2.0", "MIT"],
        messages=[Message("user", "Is Rome in Italy?"), Message("assistant", "Yes.")],
    )
    assert isinstance(mf.parameters["temperature"], float)


def test_instruction_parameter_and_role_names_are_case_insensitive() -> None:
    mf = parse(
        "from base\nSystem hi\nparameter NUM_CTX 8\nPaRaMeTeR Stop x\n"
        "message USER hello\ntemplate t\nadapter a\nlicense l"
    )
    assert mf.from_ == "base"
    assert mf.system == "hi"
    assert mf.parameters == {"num_ctx": 8, "stop": ["x"]}
    assert mf.messages == [Message("user", "hello")]
    assert (mf.template, mf.adapters, mf.licenses) == ("t", ["a"], ["l"])


def test_comments_only_at_line_start_and_not_inside_triple_quotes() -> None:
    mf = parse('# c\n\t# c\nFROM base\nSYSTEM # not a comment\nTEMPLATE """a\n# kept\n\nb"""\n')
    assert mf.system == "# not a comment"
    assert mf.template == "a\n# kept\n\nb"


def test_bare_value_runs_to_end_of_line_trimmed() -> None:
    mf = parse('FROM   ./models/my model.gguf   \nSYSTEM say "hi" twice  ')
    assert mf.from_ == "./models/my model.gguf"
    assert mf.system == 'say "hi" twice'


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (r'SYSTEM "a\tb\\c\"d\n"', 'a\tb\\c"d\n'),
        (r'SYSTEM "  padded  "  ', "  padded  "),
        ('SYSTEM ""', ""),
        (r'SYSTEM "C:\models\x.gguf"', r"C:\models\x.gguf"),  # unknown escapes stay
        (r'SYSTEM "has \"\"\" inside"', 'has """ inside'),
        ('SYSTEM """one line"""', "one line"),
        ('SYSTEM """  keeps spaces  """   ', "  keeps spaces  "),
        ('SYSTEM """first\nsecond"""', "first\nsecond"),
        ('SYSTEM """\nopener newline kept\n"""', "\nopener newline kept\n"),
        ('SYSTEM """no \\n escapes"""', "no \\n escapes"),
        ("SYSTEM 日本語 😀", "日本語 😀"),
    ],
)
def test_value_forms(line: str, value: str) -> None:
    assert parse(f"FROM base\n{line}").system == value


def test_chatml_template_and_stops() -> None:
    text = (
        "FROM qwen2.5:0.5b\n"
        'TEMPLATE """{{- if .System }}<|im_start|>system\n'
        "{{ .System }}<|im_end|>\n"
        "{{ end }}<|im_start|>user\n"
        '{{ .Prompt }}<|im_end|>"""\n'
        'PARAMETER stop "<|im_start|>"\n'
        'PARAMETER stop """<|im_end|>"""\n'
    )
    mf = parse(text)
    assert mf.template is not None
    assert mf.template.startswith("{{- if .System }}<|im_start|>system\n{{ .System }}")
    assert mf.template.endswith("{{ .Prompt }}<|im_end|>")
    assert mf.parameters["stop"] == ["<|im_start|>", "<|im_end|>"]


def test_repeated_stop_accumulates_other_parameters_last_wins() -> None:
    mf = parse(
        "FROM b\nPARAMETER stop a\nPARAMETER num_ctx 1\nPARAMETER stop b\nPARAMETER num_ctx 2"
    )
    assert mf.parameters == {"stop": ["a", "b"], "num_ctx": 2}


def test_parameter_and_message_values_follow_value_rules() -> None:
    mf = parse(
        'FROM b\nPARAMETER stop """\n"""\nPARAMETER stop "  x"\n'
        'MESSAGE system "be brief"\nMESSAGE user """line 1\nline 2"""\nMESSAGE assistant ok'
    )
    assert mf.parameters["stop"] == ["\n", "  x"]
    assert mf.messages == [
        Message("system", "be brief"),
        Message("user", "line 1\nline 2"),
        Message("assistant", "ok"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("num_ctx", "4096", 4096),
        ("seed", "-1", -1),
        ("num_predict", "+8", 8),
        ("num_ctx", '"2048"', 2048),
        ("temperature", "0.7", 0.7),
        ("temperature", "1", 1.0),
        ("top_p", ".9", 0.9),
        ("tfs_z", "1e-3", 0.001),
        ("penalize_newline", "TRUE", True),
        ("numa", "0", False),
        ("low_vram", "1", True),
        ("use_mlock", "False", False),
    ],
)
def test_parameter_types(name: str, text: str, value: object) -> None:
    got = parse(f"FROM b\nPARAMETER {name} {text}").parameters[name]
    assert got == value
    assert type(got) is PARAMETER_TYPES[name]


def test_crlf_line_endings() -> None:
    mf = parse('FROM b\r\nSYSTEM """a\r\nb"""\r\nPARAMETER num_ctx 8\r\n')
    assert (mf.system, mf.parameters) == ("a\nb", {"num_ctx": 8})


MALFORMED = [
    ("FROM b\nFOO bar", 2, 'unknown instruction "FOO": use one of FROM, PARAMETER'),
    ("FROM b\nSYSTEM", 2, "SYSTEM has no value: write SYSTEM <system prompt>"),
    ("FROM b\nTEMPLATE   ", 2, "TEMPLATE has no value"),
    ('FROM b\n\nTEMPLATE """abc\ndef\n', 3, 'unterminated """'),
    ('FROM b\nPARAMETER stop """x\n', 2, 'unterminated """'),
    ('FROM b\nSYSTEM "abc', 2, "unterminated quote"),
    ('FROM b\nSYSTEM "abc\\"', 2, "unterminated quote"),
    ('FROM b\nSYSTEM """a\nb""" more', 3, 'unexpected text \'more\' after the closing """'),
    ('FROM b\nSYSTEM "a" b', 2, 'after the closing "'),
    ('FROM b\nSYSTEM """"x""""', 2, 'unexpected text \'"\' after the closing """'),
    ("FROM b\nPARAMETER", 2, "PARAMETER has no value"),
    ("FROM b\nPARAMETER num_ctx", 2, "PARAMETER num_ctx has no value"),
    ("FROM b\nPARAMETER tempreature 1", 2, 'unknown parameter "tempreature" (did you mean "tem'),
    ("FROM b\nPARAMETER bogus 1", 2, 'unknown parameter "bogus" (known: num_keep'),
    ("FROM b\nPARAMETER num_ctx abc", 2, 'invalid value "abc" for parameter num_ctx: expected an'),
    ("FROM b\nPARAMETER num_ctx 1.5", 2, "expected an integer"),
    ("FROM b\nPARAMETER num_ctx 1_000", 2, "expected an integer"),
    ("FROM b\nPARAMETER temperature hot", 2, "temperature: expected a number"),
    ("FROM b\nPARAMETER temperature nan", 2, "expected a number"),
    ("FROM b\nPARAMETER temperature 1e999", 2, "expected a number"),
    ("FROM b\nPARAMETER use_mmap yes", 2, "use_mmap: expected true or false"),
    ('FROM b\nPARAMETER stop ""', 2, "stop: expected a non-empty string"),
    ("FROM b\nMESSAGE bot hi", 2, 'invalid MESSAGE role "bot": use one of user, assistant, system'),
    ("FROM b\nMESSAGE user", 2, "MESSAGE user has no content"),
    ("FROM b\nMESSAGE", 2, "MESSAGE has no value"),
    ('FROM ""', 1, "FROM has an empty value"),
    ('FROM b\nADAPTER "  "', 2, "ADAPTER has an empty value"),
    ("FROM b\nSYSTEM ok\nLICENSE a\0b", 3, "NUL byte"),
    ('FROM b\nSYSTEM """x\n\0"""', 3, "NUL byte"),
    ("FROM b\r\nSYSTEM x\r\nBAD", 3, 'unknown instruction "BAD"'),
]


@pytest.mark.parametrize(("text", "line", "fragment"), MALFORMED)
def test_malformed(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse(text)
    assert info.value.line == line
    assert fragment in info.value.detail
    assert str(info.value) == f"line {line}: {info.value.detail}"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "SYSTEM hi\n"])
def test_missing_from(text: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse(text)
    assert info.value.line == 0
    assert str(info.value) == (
        "no FROM line: a Modelfile must say which model it builds on, e.g. FROM smollm2:135m"
    )


def test_serialize_order_and_forms() -> None:
    mf = Modelfile(
        from_="base",
        parameters={"temperature": 0.5, "stop": ["<|im_end|>", " x"], "numa": False},
        template="{{ .Prompt }}\n",
        system='"quoted" start',
        adapters=["a.gguf"],
        licenses=["MIT"],
        messages=[Message("user", "hi")],
    )
    assert serialize(mf, header="generated by olla\n\nedit freely") == (
        "# generated by olla\n#\n# edit freely\n\n"
        "FROM base\n"
        "ADAPTER a.gguf\n"
        'TEMPLATE """{{ .Prompt }}\n"""\n'
        'SYSTEM "\\"quoted\\" start"\n'
        "PARAMETER temperature 0.5\n"
        "PARAMETER stop <|im_end|>\n"
        'PARAMETER stop " x"\n'
        "PARAMETER numa false\n"
        "MESSAGE user hi\n"
        "LICENSE MIT\n"
    )


def test_a_second_from_is_kept_after_the_adapters_as_ollama_writes_it() -> None:
    mf = parse("FROM ./mmproj.gguf\n# the model\nFROM ./model.gguf\nADAPTER a.gguf\n")
    assert (mf.from_, mf.more_from, mf.adapters) == ("./mmproj.gguf", ["./model.gguf"], ["a.gguf"])
    assert serialize(mf) == "FROM ./mmproj.gguf\nADAPTER a.gguf\nFROM ./model.gguf\n"
    assert parse(serialize(mf)) == mf


AWKWARD = [
    Modelfile(from_="smollm2:135m"),
    Modelfile(from_="./my models/m.gguf", system=""),
    Modelfile(from_='"quoted"', template='contains """ triple\nand a newline'),
    Modelfile(from_="b", system='ends with a quote\n"'),
    Modelfile(from_="b", system="back\\slash \\n not a newline \\"),
    Modelfile(from_="b", system="  leading and trailing spaces  "),
    Modelfile(from_="b", system="trailing newlines\n\n"),
    Modelfile(from_="b", system="\n"),
    Modelfile(from_="b", system="tab\there\tand\r\nCRLF\rlone CR"),
    Modelfile(from_="b", system="日本語 😀 café\u2028sep\x85nel"),
    Modelfile(from_="b", template='"""'),
    Modelfile(from_="b", template='"'),
    Modelfile(from_="b", licenses=["# looks like a comment", "FROM other\nPARAMETER x"]),
    Modelfile(
        from_="sha256:" + "0" * 64,
        parameters={"stop": ['"', "\\", "\n", "<|im_end|>"], "seed": -7, "top_p": 1e-9},
        messages=[Message("user", ""), Message("assistant", ' "a" ')],
        adapters=["x", " y "],
    ),
]


@pytest.mark.parametrize("mf", AWKWARD)
def test_round_trip_awkward_values(mf: Modelfile) -> None:
    assert parse(serialize(mf)) == mf
    assert parse(serialize(mf, header="a header\nwith two lines")) == mf


ALPHABET = [*"ab Z09#{}<|>\"\\'\t\n\r.:", '"""', "é", "日本", "😀", "\u2028", "\x85", "\xa0"]


def _text(rng: random.Random, min_len: int = 0) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(min_len, 12)))


def _nonblank(rng: random.Random) -> str:
    while not (value := _text(rng, 1)).strip():
        pass
    return value


def _random_parameters(rng: random.Random) -> dict:
    params: dict = {}
    for name in rng.sample(sorted(PARAMETER_TYPES), rng.randint(0, 6)):
        kind = PARAMETER_TYPES[name]
        if kind is int:
            params[name] = rng.randint(-(2**40), 2**40)
        elif kind is float:
            params[name] = rng.uniform(-10, 10) * 10 ** rng.randint(-12, 12)
        elif kind is bool:
            params[name] = rng.random() < 0.5
        elif name == "stop":
            params[name] = [_text(rng, 1) for _ in range(rng.randint(1, 3))]
        else:
            params[name] = _text(rng, 1)
    return params


def _random_modelfile(rng: random.Random) -> Modelfile:
    def maybe() -> str | None:
        return _text(rng) if rng.random() < 0.6 else None

    return Modelfile(
        from_=_nonblank(rng),
        parameters=_random_parameters(rng),
        template=maybe(),
        system=maybe(),
        adapters=[_nonblank(rng) for _ in range(rng.randint(0, 2))],
        more_from=[_nonblank(rng) for _ in range(rng.randint(0, 2))],
        licenses=[_text(rng) for _ in range(rng.randint(0, 2))],
        messages=[
            Message(rng.choice(["user", "assistant", "system"]), _text(rng))
            for _ in range(rng.randint(0, 3))
        ],
    )


def test_random_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(500):
        mf = _random_modelfile(rng)
        text = serialize(mf)
        assert "\r" not in text
        assert parse(text) == mf, text
        # serialized text survives a trip through a Windows editor too
        assert parse(text.replace("\n", "\r\n")) == mf, text


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("num_ctx", 4096, 4096),
        ("num_ctx", "4096", 4096),
        ("NUM_CTX", 8.0, 8),
        ("seed", -1, -1),
        ("temperature", 1, 1.0),
        ("temperature", " 0.5 ", 0.5),
        ("use_mmap", True, True),
        ("use_mmap", "FALSE", False),
        ("use_mmap", 0, False),
        ("stop", "<|im_end|>", ["<|im_end|>"]),
        ("stop", ["a", " b "], ["a", " b "]),
        ("Stop", [], []),
    ],
)
def test_coerce_parameter(name: str, value: object, expected: object) -> None:
    got = coerce_parameter(name, value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("num_ctx", True, "invalid value true for parameter num_ctx: expected an integer"),
        ("num_ctx", 1.5, "expected an integer"),
        ("num_ctx", None, "invalid value null"),
        ("num_ctx", [1], "expected an integer"),
        ("temperature", "hot", 'invalid value "hot" for parameter temperature'),
        ("temperature", float("inf"), "expected a number"),
        ("temperature", float("nan"), "expected a number"),
        ("temperature", 10**400, "expected a number"),
        ("temperature", False, "expected a number"),
        ("use_mmap", 2, "expected true or false"),
        ("use_mmap", "yes", "expected true or false"),
        ("stop", 5, "expected a non-empty string"),
        ("stop", ["a", 5], "expected a non-empty string"),
        ("stop", "", "expected a non-empty string"),
        ("num_ctxx", 1, 'unknown parameter "num_ctxx" (did you mean "num_ctx"?)'),
    ],
)
def test_coerce_parameter_rejects(name: str, value: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        coerce_parameter(name, value)
    assert not isinstance(info.value, ModelfileError)
    assert fragment in str(info.value)


def test_coerce_parameters_lowercases_merges_stops_and_skips_null() -> None:
    got = coerce_parameters(
        {"Temperature": "0.5", "stop": "a", "STOP": ["b", "c"], "seed": None, "num_gpu": 0}
    )
    assert got == {"temperature": 0.5, "stop": ["a", "b", "c"], "num_gpu": 0}
    with pytest.raises(InvalidRequest, match="num_batch"):
        coerce_parameters({"num_batch": "many"})


def test_format_parameters_matches_ollama_show() -> None:
    params = {
        "num_ctx": 4096,
        "temperature": 0.7,
        "top_p": 1.0,
        "use_mmap": False,
        "stop": ["<|im_end|>", 'say "hi"\n'],
    }
    assert format_parameters(params).split("\n") == [
        "num_ctx                        4096",
        "temperature                    0.7",
        "top_p                          1",
        "use_mmap                       false",
        'stop                           "<|im_end|>"',
        'stop                           "say \\"hi\\"\\n"',
    ]
    assert format_parameters({}) == ""


def test_parameter_types_is_read_only_and_complete() -> None:
    with pytest.raises(TypeError):
        PARAMETER_TYPES["x"] = int  # type: ignore[index]
    assert len(PARAMETER_TYPES) == 33  # Ollama's 30 of old and its draft_num_predict, and olla's 2
    assert PARAMETER_TYPES["stop"] is str
    assert {PARAMETER_TYPES[n] for n in ("num_ctx", "top_p", "numa")} == {int, float, bool}
