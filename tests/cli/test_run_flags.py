"""`olla run`'s flags and what they make, without a daemon: the parsing, the request fields, the
word wrap, the `--verbose` summary and an embedding's line. tests/cli/test_run_options.py runs
them against a real daemon and on a pseudo-terminal."""

from __future__ import annotations

import json
import random
import struct

import pytest
from click.testing import CliRunner

from olla.address import HostAddress
from olla.answer import CLOSING, OPENING, AnswerPrinter
from olla.cli import cli, run_cmd
from olla.client import Client
from olla.repl import Session, chat_request
from olla.run_model import is_embedding, prompt_text
from olla.run_stats import go_duration, go_float32, summary, vector_line
from olla.wordwrap import WordWrap, char_width, wrap_width

TEXT = (
    "The sky is blue because molecules in the air scatter the short wavelengths of sunlight "
    "more than the long ones; this is called Rayleigh scattering, after the physicist who "
    "described it in 1871.\nAt sunset the light crosses more air, so the reds remain."
)


def test_the_flags_parse_into_their_values() -> None:
    args = ["m", "--verbose", "--format", "json", "--keepalive", "1h30m", "--nowordwrap"]
    params = run_cmd.make_context("run", [*args, "--insecure", "Hi"]).params
    assert params["verbose"] and params["nowordwrap"] and params["insecure"]
    assert (params["answer_format"], params["keepalive"], params["prompt"]) == (
        "json",
        "1h30m",
        ("Hi",),
    )
    schema = run_cmd.make_context("run", ["m", "--format", '{"type": "object"}']).params
    assert schema["answer_format"] == {"type": "object"}
    bare = run_cmd.make_context("run", ["m"]).params
    assert not (bare["verbose"] or bare["nowordwrap"] or bare["insecure"])
    assert bare["answer_format"] is None and bare["keepalive"] is None


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--format", "xml", 'must be "json" or a JSON schema object'),
        ("--format", "[1]", 'must be "json" or a JSON schema object'),
        ("--keepalive", "soon", 'invalid duration "soon"'),
    ],
)
def test_a_bad_flag_value_is_a_usage_error_before_any_request(
    flag: str, value: str, message: str
) -> None:
    # OLLA_HOST points nowhere: a usage error must come before any connection is tried
    result = CliRunner().invoke(
        cli, ["run", "m", flag, value, "Hi"], env={"OLLA_HOST": "127.0.0.1:9"}
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.stderr and message in result.stderr


def test_the_chat_request_carries_format_and_keep_alive_as_set() -> None:
    s = Session(Client(HostAddress()), "m")
    question = {"role": "user", "content": "Hi"}
    assert set(chat_request(s, question)) == {"model", "messages"}
    s.opts.format, s.opts.keep_alive = "json", "10m"
    body = chat_request(s, question)
    assert (body["format"], body["keep_alive"]) == ("json", "10m")


@pytest.mark.parametrize(
    ("arguments", "piped", "prompt"),
    [
        (("Sum", "up:"), None, "Sum up:"),
        (("Sum up:",), "notes\n", "notes\n Sum up:"),  # Ollama: [stdin, *args] joined by " "
        ((), "notes\n", "notes\n"),
        (("Hi",), "", "Hi"),  # empty stdin adds nothing
    ],
)
def test_piped_text_comes_before_the_prompt(
    arguments: tuple[str, ...], piped: str | None, prompt: str
) -> None:
    assert prompt_text(arguments, piped) == prompt


def test_a_model_that_only_embeds_is_an_embedding_model() -> None:
    assert is_embedding({"capabilities": ["embedding"]})
    assert not is_embedding({"capabilities": ["completion", "tools"]})
    assert not is_embedding({"capabilities": ["embedding", "completion"]})
    assert not is_embedding({})


def wrapped(text: str, width: int, seed: int = 0) -> str:
    """`text` through a WordWrap, fed in random pieces as a stream arrives."""
    rng, wrap, out, at = random.Random(seed), WordWrap(width), [], 0
    while at < len(text):
        size = rng.randint(1, 7)
        out.append(wrap.feed(text[at : at + size]))
        at += size
    return "".join(out) + wrap.flush()


@pytest.mark.parametrize("width", [15, 20, 33, 75])
@pytest.mark.parametrize("seed", range(3))
def test_wrapped_lines_fit_and_no_word_is_cut(width: int, seed: int) -> None:
    text = wrapped(TEXT, width, seed)
    lines = text.split("\n")
    assert all(len(line) <= width for line in lines), lines
    assert text.split() == TEXT.split()  # the same words, none cut in two
    assert max(len(line.rstrip()) for line in lines) > width - 12  # the lines are filled


def test_a_word_longer_than_a_line_is_cut_and_a_newline_starts_afresh() -> None:
    assert wrapped("see https://example.com/a/very/long/path ok", 12) == (
        "see \nhttps://exam\nple.com/a/ve\nry/long/path\nok"
    )
    assert wrapped("one two\nthree four five", 10) == "one two\nthree four\nfive"


def test_wide_characters_count_two_columns_and_break_anywhere() -> None:
    assert char_width("字") == 2 and char_width("a") == 1 and char_width("\u0301") == 0
    text = wrapped("字" * 12, 10)
    assert text == "字" * 5 + "\n" + "字" * 5 + "\n" + "字" * 2


def test_wrap_width_leaves_ollamas_margin_and_skips_narrow_terminals() -> None:
    assert wrap_width(80) == 75 and wrap_width(10) == 5 and wrap_width(9) is None


def test_the_printer_wraps_reasoning_and_answer_each_from_the_line_start() -> None:
    out: list[str] = []
    printer = AnswerPrinter(out.append, styled=False, hide_thinking=False, wrap=WordWrap(12))
    for piece in ("I think the", " answer is", " four."):
        printer.add({"thinking": piece})
    for piece in ("Two and two", " make four."):
        printer.add({"content": piece})
    printer.finish("\n")
    text = "".join(out)
    assert (
        text
        == OPENING + "I think the \nanswer is \nfour.\n" + CLOSING + "Two and two \nmake four.\n"
    )
    assert printer.answer.content == "Two and two make four."  # the answer kept unwrapped


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (12_345_000, "12.345ms"),
        (1_000_000_000, "1s"),
        (1_234_567_891, "1.234567891s"),
        (61_500_000_000, "1m1.5s"),
        (3_600_000_000_000, "1h0m0s"),
    ],
)
def test_durations_read_as_go_writes_them(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_the_verbose_summary_is_ollamas() -> None:
    stats = {
        "done": True,
        "total_duration": 1_234_567_891,
        "load_duration": 2_345_678,
        "prompt_eval_count": 12,
        "prompt_eval_duration": 34_567_890,
        "eval_count": 40,
        "eval_duration": 987_654_321,
    }
    assert summary(stats) == (
        "total duration:       1.234567891s\n"
        "load duration:        2.345678ms\n"
        "prompt eval count:    12 token(s)\n"
        "prompt eval duration: 34.56789ms\n"
        "prompt eval rate:     347.14 tokens/s\n"
        "eval count:           40 token(s)\n"
        "eval duration:        987.654321ms\n"
        "eval rate:            40.50 tokens/s\n"
    )
    # a model already loaded: no load line, as Ollama leaves out what is zero
    assert "load duration" not in summary({**stats, "load_duration": 0})


def test_a_vector_prints_as_gos_json_of_float32s() -> None:
    assert vector_line([0.1, -0.25, 12.0, 0.0, 1e-7, 3e21, 1.5e-6]) == (
        "[0.1,-0.25,12,0,1e-7,3e+21,0.0000015]"
    )
    rng = random.Random(1)
    values = [rng.uniform(-1, 1) for _ in range(200)]
    parsed = json.loads(vector_line(values))
    as_float32 = [struct.unpack("f", struct.pack("f", v))[0] for v in values]
    assert [struct.unpack("f", struct.pack("f", v))[0] for v in parsed] == as_float32
    assert all(len(go_float32(v).lstrip("-0.")) <= 9 for v in values)  # shortest: 9 digits at most
