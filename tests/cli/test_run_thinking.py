"""`olla run` with a thinking model, against a real daemon: the one-shot answer piped, the chat on
a pseudo-terminal, `--think`, `--hidethinking`, `/set think` and `/set nothink`.

The thinking model is SmolLM2 under a TEMPLATE that opens `<think>` for its answer, after two
worked examples that close their reasoning and then answer, so that it does the same (greedy).
What a request asked for is read back from the daemon's log: the prompt's token count
(`tokens_in`) changes with `think` (the template opens the tag), with the level (the template
names it) and with the reasoning of earlier answers (the template writes it back).
One daemon serves the module."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from olla.answer import BOLD, CLOSING, GREY, OPENING, RESET
from tests.cli.terminal import ANSWER_TIMEOUT, PROMPT, Terminal, show
from tests.conftest import MODELFILE, Daemon, make_daemon, wait_for

EXAMPLES = "".join(
    f"<|im_start|>user\nSay {word}.<|im_end|>\n"
    f"<|im_start|>assistant\n<think>Easy.</think>\n{word.capitalize()}.<|im_end|>\n"
    for word in ("yes", "no")
)
TEMPLATE = (
    '{{- range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n'
    "{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"
    "{{- if .ThinkLevel }}<|im_start|>system\nThink with {{ .ThinkLevel }} effort.<|im_end|>\n"
    "{{ end }}" + EXAMPLES + '{{ range .Messages }}{{ if ne .Role "system" }}'
    "<|im_start|>{{ .Role }}\n{{ if .Thinking }}<think>{{ .Thinking }}</think>\n{{ end }}"
    "{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"
    "<|im_start|>assistant\n{{ if .Think }}<think>\n{{ end }}"
)
THINKER = f'FROM smollm2:135m\nTEMPLATE """{TEMPLATE}"""\n'
THINKER += "PARAMETER temperature 0\nPARAMETER num_predict 40\n"
QUESTION = "Say hello."
TAGS = ("<think>", "</think>")
PLAIN = re.compile(
    re.escape(OPENING) + r"(?P<thinking>.+?)\n" + re.escape(CLOSING) + r"(?P<content>.+)\n",
    re.DOTALL,
)
STYLED = re.compile(
    re.escape(GREY + BOLD + OPENING + RESET + GREY)
    + r"(?P<thinking>.+?)\n?"
    + re.escape(GREY + BOLD + CLOSING + RESET)
    + r"(?P<content>.+)\n\n\Z",  # the chat's blank line after an answer
    re.DOTALL,
)


def run(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """`olla ARGS` with its output piped, as a script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "olla", *args],
        env=d.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=ANSWER_TIMEOUT,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("run-thinking")
    d = make_daemon(tmp)
    d.env["HOME"] = str(tmp / "home")  # the chat's history file
    d.start()
    (tmp / "Thinker").write_text(THINKER)
    for name, modelfile in (("smollm2:135m", MODELFILE), ("thinker", tmp / "Thinker")):
        created = run(d, "create", name, "-f", str(modelfile))
        assert created.returncode == 0, created.stderr
    yield d
    d.stop()


def prompt_sizes(d: Daemon) -> list[int]:
    """The prompt token count of every /api/chat request so far, from the daemon's log."""
    return [int(n) for n in re.findall(r"POST /api/chat -> 200 .*tokens_in=(\d+)", d.log())]


def next_prompt_size(d: Daemon, before: int) -> int:
    """The prompt size of the request after the first `before` ones, once it is logged."""
    wait_for(lambda: len(prompt_sizes(d)) > before, timeout=30, what="the request's log line")
    return prompt_sizes(d)[before]


def prompt_size(d: Daemon, messages: list[dict[str, str]], think: Any = None) -> int:
    """The prompt token count the daemon gives these messages and `think` (None: not sent)."""
    body: dict[str, Any] = {"model": "thinker", "messages": messages, "stream": False}
    body["options"] = {"num_predict": 1}
    if think is not None:
        body["think"] = think
    request = urllib.request.Request(d.base_url + "/api/chat", json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT) as response:
        return int(json.load(response)["prompt_eval_count"])


def clean(*texts: str) -> bool:
    return all(text.strip() and not any(tag in text for tag in TAGS) for text in texts)


def test_one_shot_prints_the_reasoning_apart_then_the_answer(served: Daemon) -> None:
    asked = len(prompt_sizes(served))
    shown = run(served, "run", "thinker", QUESTION)
    assert shown.returncode == 0, shown.stderr
    parts = PLAIN.fullmatch(shown.stdout)  # piped: the markers as plain text, no escapes
    assert parts, shown.stdout
    assert clean(parts["thinking"], parts["content"])
    thinking_size = next_prompt_size(served, asked)
    assert thinking_size == prompt_size(served, [{"role": "user", "content": QUESTION}])

    hidden = run(served, "run", "thinker", "--hidethinking", QUESTION)
    assert hidden.returncode == 0, hidden.stderr
    assert clean(hidden.stdout) and OPENING not in hidden.stdout and CLOSING not in hidden.stdout
    assert hidden.stdout.endswith("\n") and "\x1b" not in hidden.stdout
    assert next_prompt_size(served, asked + 2) == thinking_size  # it still asked for reasoning

    plain = run(served, "run", "thinker", "--think=false", QUESTION)
    assert plain.returncode == 0, plain.stderr
    assert clean(plain.stdout) and OPENING not in plain.stdout
    assert next_prompt_size(served, asked + 3) < thinking_size  # no <think> opened


def test_think_on_a_model_that_cannot_fails_with_the_daemons_message(served: Daemon) -> None:
    refused = run(served, "run", "smollm2:135m", "--think", QUESTION)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == 'Error: field "think": smollm2:135m does not support thinking\n'
    assert run(served, "run", "smollm2:135m", "--think=false", QUESTION).returncode == 0

    unknown = run(served, "run", "thinker", "--think=deep", QUESTION)
    assert unknown.returncode == 2 and "Invalid value for '--think': 'deep'" in unknown.stderr


@pytest.fixture
def chats() -> Iterator[Callable[..., Terminal]]:
    """`olla run ARGS...` on pseudo-terminals, against the module's daemon; `prompt`: wait for
    the chat's first prompt."""
    opened: list[Terminal] = []

    def start(d: Daemon, *args: str, prompt: bool = True) -> Terminal:
        opened.append(Terminal([sys.executable, "-m", "olla", "run", *args], d.env))
        if prompt:
            opened[-1].expect(re.escape(PROMPT), timeout=30)
        return opened[-1]

    yield start
    for terminal in opened:
        terminal.close()


def ask(term: Terminal, question: str) -> str:
    """The answer as the terminal shows it, without the echoed question (newlines as written)."""
    shown = term.ask(question).replace("\r\n", "\n")
    return shown.split(question + "\n", 1)[1]


def test_the_chat_shows_the_reasoning_dimmed_and_set_think_changes_the_next_request(
    served: Daemon, chats: Callable[..., Terminal]
) -> None:
    term = chats(served, "thinker")
    asked = len(prompt_sizes(served))
    first = STYLED.search(ask(term, QUESTION))  # a terminal: dimmed, its markers bold
    assert first and clean(first["thinking"], first["content"])
    question = {"role": "user", "content": QUESTION}
    assert next_prompt_size(served, asked) == prompt_size(served, [question])
    assert "Created new model 'thought'" in term.ask("/save thought")
    saved = show(served, "thought")["messages"]
    assert [(m["role"], m["content"]) for m in saved] == [
        ("user", QUESTION),
        ("assistant", first["content"]),
    ]

    assert "Set 'nothink' mode." in term.ask("/set nothink")
    answer = ask(term, QUESTION)
    # nothing shown as reasoning (what the model writes unasked is its own: not checked)
    assert OPENING not in answer and GREY not in answer
    # think false went out, and the first answer's reasoning with it
    reply = {"role": "assistant", "content": first["content"], "thinking": first["thinking"]}
    bare = {"role": "assistant", "content": first["content"]}
    sent = next_prompt_size(served, asked + 2)
    assert sent == prompt_size(served, [question, reply, question], think=False)
    assert sent != prompt_size(served, [question, bare, question], think=False)
    second = {"role": "assistant", "content": answer.removesuffix("\n\n")}
    history = [question, reply, question, second, question]

    assert "Couldn't set 'think'" in term.ask("/set think deep")
    assert "Set 'think' mode to 'high'." in term.ask("/set think high")
    assert OPENING in ask(term, QUESTION)
    sent = next_prompt_size(served, asked + 5)
    assert sent == prompt_size(served, history, think="high")
    assert sent != prompt_size(served, history, think=True)  # the level went out

    help_text = term.ask("/set")
    assert "/set think [low|medium|high]" in help_text and "/set nothink" in help_text
    term.send("/bye\r")
    assert term.wait() == 0


def test_the_chat_hides_the_reasoning_and_warns_of_a_model_that_cannot_think(
    served: Daemon, chats: Callable[..., Terminal]
) -> None:
    term = chats(served, "thinker", "--hidethinking")
    asked = len(prompt_sizes(served))
    answer = ask(term, QUESTION)
    assert clean(answer) and OPENING not in answer and "\x1b[38;5" not in answer
    question = {"role": "user", "content": QUESTION}
    assert next_prompt_size(served, asked) == prompt_size(served, [question])  # still thinking

    plain = chats(served, "smollm2:135m")
    warned = plain.ask("/set think")
    assert 'warning: model "smollm2:135m" does not support thinking output' in warned
    assert "Set 'think' mode." in warned
    refused = plain.ask(QUESTION)  # the daemon refuses, the chat goes on
    assert 'Error: field "think": smollm2:135m does not support thinking' in refused
    assert "Set 'nothink' mode." in plain.ask("/set nothink")
    assert clean(ask(plain, QUESTION))

    refused_at_start = chats(served, "smollm2:135m", "--think", prompt=False)
    assert refused_at_start.wait() == 1
    assert '"smollm2:135m" does not support thinking' in refused_at_start.output
    assert PROMPT not in refused_at_start.output
