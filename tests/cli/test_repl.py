"""`olla run` as a person uses it: the interactive chat in a pseudo-terminal, a real daemon
and the real SmolLM2-135M answering."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from olla.repl_input import read_input
from tests.cli.terminal import ANSWER_TIMEOUT, PROMPT, Terminal, olla, show, words
from tests.conftest import Daemon, make_daemon
from tests.daemon_helpers import chat_answer
from tests.fake_ollama_registry import FakeOllamaRegistry


def test_chat_commands_save_and_multiline(
    daemon: Daemon, chat_env: dict[str, str], terminals: Callable[..., Terminal], tmp_path: Path
) -> None:
    term = terminals("run", "smollm2:135m", env=chat_env)
    term.expect(re.escape(PROMPT), timeout=30)
    # greedy, so that the answer is the API's to the same question
    assert "Set parameter 'temperature' to '0'" in term.ask("/set parameter temperature 0")
    answered = term.ask("What is the capital of France?")

    assert "Set parameter 'num_predict' to '40'" in term.ask("/set parameter num_predict 40")
    shown = term.ask("/show parameters")
    model_part, user_part = shown.split("User defined parameters:")
    for expected in (
        "Model defined parameters:",
        "temperature",
        "0.2",
        "top_p",
        "0.9",
        "num_ctx",
        "4096",
        '"<|im_end|>"',
    ):
        assert expected in model_part
    assert re.search(r"temperature\s+0\s", user_part) and re.search(r"num_predict\s+40", user_part)
    assert "Couldn't set parameter" in term.ask("/set parameter temprature 1")
    assert "Unknown command '/frobnicate'. Type /? for help" in term.ask("/frobnicate")

    assert "Set system message." in term.ask("/set system You only answer in French.")
    assert "You only answer in French." in term.ask("/show system")
    assert "Created new model 'frenchy'" in term.ask("/save frenchy")
    assert "frenchy:latest" in olla(daemon, "list").stdout
    saved = show(daemon, "frenchy")
    assert saved["system"] == "You only answer in French."
    assert re.search(r"temperature\s+0\n", saved["parameters"] + "\n")
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][0]["content"] == "What is the capital of France?"
    answer = chat_answer(
        daemon, "smollm2:135m", "What is the capital of France?", {"temperature": 0}
    )
    assert answer.strip() and saved["messages"][1]["content"] == answer
    assert words(answer) in words(answered)

    term.send('"""Name one colour\r')
    term.expect(re.escape("... "))
    assert term.ask('of the French flag."""').split('flag."""', 1)[1].strip()  # an answer
    term.ask("/save frenchy:2")
    question = show(daemon, "frenchy:2")["messages"][2]
    assert question == {"role": "user", "content": "Name one colour\nof the French flag."}

    term.send("/bye\r")
    assert term.wait() == 0
    history = (tmp_path / "home" / ".olla" / "history").read_text()
    assert "What is the capital of France?" in history


def test_ctrl_c_stops_the_answer_and_ctrl_d_exits(
    daemon: Daemon, chat_env: dict[str, str], terminals: Callable[..., Terminal]
) -> None:
    term = terminals("run", "smollm2:135m", env=chat_env)
    term.expect(re.escape(PROMPT), timeout=30)
    term.ask("/set parameter num_predict 400")
    term.ask("/set parameter temperature 0")  # greedy: a stale cell would show, chance would not
    term.send("Write a long story about a dragon who learns to bake bread.\r")
    term.expect(r"bread\.\r?\n")  # the echoed question
    term.expect(r"[A-Za-z]{3}")  # the answer is streaming (digits would match escapes)
    term.send("\x03")
    term.expect(re.escape(PROMPT), timeout=30)

    shown = term.ask("What is the capital of France?")
    term.ask("/save after-interrupt")
    messages = show(daemon, "after-interrupt")["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "What is the capital of France?"
    ]  # the interrupted turn was dropped
    # and left nothing behind: the answer is the one the question gets alone, through the API
    greedy = {"temperature": 0, "num_predict": 400}
    answer = chat_answer(daemon, "smollm2:135m", "What is the capital of France?", greedy)
    assert answer.strip() and messages[-1] == {"role": "assistant", "content": answer}
    assert words(answer) in words(shown)

    term.interrupt_prompt()  # at an empty prompt: a hint, and the chat goes on
    assert "Use Ctrl + d or /bye to exit." in term.expect(re.escape(PROMPT), timeout=10)
    term.send("\x04")
    assert term.wait() == 0


def test_unknown_model_fails_before_the_prompt(
    tmp_path: Path, terminals: Callable[..., Terminal]
) -> None:
    with FakeOllamaRegistry() as registry:  # it has no models: a 404 for every name
        d = make_daemon(tmp_path)
        d.env["OLLA_REGISTRY"] = registry.url
        d.start()
        try:
            term = terminals("run", "nope", env=d.env)
            assert term.wait() == 1
        finally:
            d.stop()
    # not in the store: run tries to pull it, and the pull's error ends the command
    assert re.search(r"(^|\n)Error: [^\n]*\bnope\b", term.output), term.output
    assert PROMPT not in term.output


def test_unusable_home_only_loses_the_saved_history(
    chat_env: dict[str, str], terminals: Callable[..., Terminal], tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "home-file"
    not_a_directory.write_text("")
    term = terminals("run", "smollm2:135m", env={**chat_env, "HOME": str(not_a_directory)})
    term.expect(re.escape(PROMPT), timeout=30)
    assert "/set parameter" in term.ask("/? set")
    term.send("/bye\r")
    assert term.wait() == 0
    assert "Traceback" not in term.output


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["hello"], ("hello", False)),
        (["/show info"], ("/show info", False)),
        (['"""/not a command"""'], ("/not a command", True)),
        (['"""', "first", 'second"""'], ("first\nsecond", True)),
        (['"""first', "", 'last"""'], ("first\n\nlast", True)),
        (['/set system """Be', 'brief."""'], ("/set system Be\nbrief.", False)),
    ],
)
def test_read_input_joins_quoted_blocks(lines: list[str], expected: tuple[str, bool]) -> None:
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        return lines[len(prompts) - 1]

    assert read_input(read) == expected
    assert prompts == [PROMPT] + ["... "] * (len(lines) - 1)


def test_one_shot_prints_only_the_answer(
    daemon: Daemon, chat_env: dict[str, str], tmp_path: Path
) -> None:
    # greedy, so that the answer is the API's to the same question
    greedy = tmp_path / "Modelfile"
    greedy.write_text("FROM smollm2:135m\nPARAMETER temperature 0\n")
    assert olla(daemon, "create", "greedy", "-f", str(greedy)).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "olla", "run", "greedy"],
        input="What is the capital of France?",
        env=chat_env,
        capture_output=True,
        text=True,
        timeout=ANSWER_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    answer = chat_answer(daemon, "greedy", "What is the capital of France?")
    assert answer.strip() and done.stdout == answer + "\n"
