"""`olla run`'s flags and `/set` commands against a real daemon and the real SmolLM2: `--verbose`,
`--format`, `--keepalive`, word wrap on a narrow pseudo-terminal (and none when piped), piped
text before the prompt, a missing model pulled from a fake Hugging Face first, and an embedding
model (SmolLM2 whose GGUF says it pools) printing its vector. One daemon serves the module."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from olla.run_stats import go_float32
from tests.cli.terminal import ANSWER_TIMEOUT, PROMPT, Terminal, words
from tests.conftest import MODELFILE, Daemon, make_daemon, wait_for
from tests.daemon_helpers import chat_answer
from tests.fake_hf import FakeHub

REPO, OTHER_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF", "someone/SmolLM2-again-GGUF"
GGUF = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
GREEDY = "FROM smollm2:135m\nPARAMETER temperature 0\nPARAMETER num_predict 48\n"
# the bare text, no chat turns: its continuation follows whatever the text ends with
RAW = GREEDY + 'TEMPLATE "{{ range .Messages }}{{ .Content }}{{ end }}"\n'
STORY = "Write a long story about a dragon who learns to bake bread."
TALE = "Tell me a story."  # short enough that its echo at the chat's prompt fits one line
SHORT = "What is the capital of France?"
COLUMNS = 40  # the narrow terminal: lines of at most 35 columns (Ollama's margin of 5)
GO_DURATION = r"(\d+h)?(\d+m)?\d+(\.\d+)?(ns|µs|ms|s)"
SUMMARY = [
    rf"total duration:       {GO_DURATION}",
    rf"(load duration:        {GO_DURATION}\n)?prompt eval count:    (?P<prompt>\d+) token\(s\)",
    rf"prompt eval duration: {GO_DURATION}",
    r"prompt eval rate:     \d+\.\d\d tokens/s",
    r"eval count:           (?P<eval>\d+) token\(s\)",
    rf"eval duration:        {GO_DURATION}",
    r"eval rate:            \d+\.\d\d tokens/s",
]
SUMMARY_RE = re.compile("\n".join(SUMMARY) + "\n")


def with_pooling(source: Path, target: Path) -> None:
    """A copy of a llama GGUF whose metadata says it pools by mean (`llama.pooling_type` 1),
    which makes it an embedding model. The key goes in before the others, with a padding key
    so that the tensor data, which follows aligned to 32 bytes, moves by a multiple of 32."""

    def kv(key: str, kind: int, value: bytes) -> bytes:
        return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + value

    pooling = kv("llama.pooling_type", 4, struct.pack("<I", 1))  # 4: uint32
    pad_key = "olla.test.padding"
    base = len(pooling) + len(kv(pad_key, 8, struct.pack("<Q", 0)))  # 8: string
    padding = "x" * (-base % 32)
    inserted = pooling + kv(pad_key, 8, struct.pack("<Q", len(padding)) + padding.encode())
    with source.open("rb") as src, target.open("wb") as dst:
        header = src.read(24)  # magic, version, tensor count, key count
        assert header[:4] == b"GGUF" and struct.unpack("<I", header[4:8])[0] == 3
        (keys,) = struct.unpack("<Q", header[16:24])
        dst.write(header[:16] + struct.pack("<Q", keys + 2) + inserted)
        shutil.copyfileobj(src, dst, 1 << 20)


@pytest.fixture(scope="module")
def hub(smollm2_gguf: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        # short greedy answers: Ollama-style params in the repo become the model's parameters
        params = json.dumps({"temperature": 0, "num_predict": 24}).encode()
        for repo in (REPO, OTHER_REPO):
            fake.add_repo(repo, {GGUF: smollm2_gguf, "params": params})
        yield fake


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, hub: FakeHub
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("run-options")
    d = make_daemon(tmp)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        d.env.pop(key, None)
    d.env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf_home"), HOME=str(tmp / "home"))
    d.env["TERM"] = "xterm"
    d.start()
    (tmp / "Greedy").write_text(GREEDY)
    (tmp / "Raw").write_text(RAW)
    models = (("smollm2:135m", MODELFILE), ("greedy", tmp / "Greedy"), ("raw", tmp / "Raw"))
    for name, modelfile in models:
        created = run(d, "create", name, "-f", str(modelfile))
        assert created.returncode == 0, created.stderr
    yield d
    d.stop()


def run(d: Daemon, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`olla ARGS` piped, as a script runs it; `stdin`: text piped in (None: nothing)."""
    return subprocess.run(
        [sys.executable, "-m", "olla", *args],
        env=d.env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=ANSWER_TIMEOUT,
    )


def api(d: Daemon, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(d.base_url + path, data, timeout=ANSWER_TIMEOUT) as response:
        return json.load(response)


def api_chat(d: Daemon, model: str, content: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": False}
    return api(d, "/api/chat", body)


@pytest.fixture
def terminals(served: Daemon) -> Iterator[Callable[..., Terminal]]:
    """`olla ARGS...` on pseudo-terminals COLUMNS wide (or `columns`), against the daemon."""
    opened: list[Terminal] = []

    def start(*args: str, columns: int = COLUMNS) -> Terminal:
        opened.append(Terminal([sys.executable, "-m", "olla", *args], served.env, columns))
        return opened[-1]

    yield start
    for terminal in opened:
        terminal.close()


def shown_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").rstrip("\n").split("\n")


def answer_lines(term: Terminal, question: str) -> list[str]:
    """The lines of the chat's answer to `question`, as the terminal shows them."""
    return shown_lines(term.ask(question).split(question + "\r\n", 1)[1])


def test_verbose_prints_ollamas_summary_on_stderr(served: Daemon) -> None:
    done = run(served, "run", "greedy", "--verbose", SHORT)
    assert done.returncode == 0, done.stderr
    reply = api_chat(served, "greedy", SHORT)
    assert done.stdout == reply["message"]["content"] + "\n"  # the answer alone on stdout
    summary = SUMMARY_RE.fullmatch(done.stderr)
    assert summary, done.stderr
    assert int(summary["prompt"]) == reply["prompt_eval_count"]
    assert int(summary["eval"]) == reply["eval_count"]
    assert run(served, "run", "greedy", SHORT).stderr == ""  # quiet without it


def test_piped_text_goes_before_the_prompt(served: Daemon) -> None:
    notes = "Paris is the capital of France.\n"
    done = run(served, "run", "raw", "The capital of Italy is", stdin=notes)
    assert done.returncode == 0, done.stderr
    answer = chat_answer(served, "raw", notes + " The capital of Italy is")  # as Ollama joins
    assert answer.strip() and done.stdout == answer + "\n"
    assert chat_answer(served, "raw", "The capital of Italy is " + notes) != answer


def test_format_json_and_keepalive_go_with_the_request(served: Daemon) -> None:
    plain = run(served, "run", "greedy", "Describe a cat.")
    assert not plain.stdout.lstrip().startswith("{")
    shaped = run(served, "run", "greedy", "--format", "json", "Describe a cat.")
    assert shaped.returncode == 0 and shaped.stdout.lstrip().startswith("{"), shaped.stdout

    kept = run(served, "run", "greedy", "--keepalive", "2h", SHORT)
    assert kept.returncode == 0, kept.stderr
    [loaded] = [m for m in api(served, "/api/ps")["models"] if m["name"] == "greedy:latest"]
    expires = datetime.fromisoformat(loaded["expires_at"].replace("Z", "+00:00"))
    assert expires - datetime.now(timezone.utc) > timedelta(hours=1)  # 2 hours, not 5 minutes
    assert run(served, "run", "greedy", "--keepalive", "0", SHORT).returncode == 0
    wait_for(
        lambda: all(m["name"] != "greedy:latest" for m in api(served, "/api/ps")["models"]),
        timeout=30,
        what="greedy unloaded at once",
    )


def test_answers_wrap_at_words_on_a_terminal_and_never_when_piped(
    served: Daemon, terminals: Callable[..., Terminal]
) -> None:
    answer = chat_answer(served, "greedy", STORY)
    assert max(len(line) for line in answer.split("\n")) > COLUMNS  # something to wrap

    wrapped = terminals("run", "greedy", STORY)
    assert wrapped.wait(ANSWER_TIMEOUT) == 0
    lines = shown_lines(wrapped.output)
    assert all(len(line) <= COLUMNS - 5 for line in lines), lines
    assert words(wrapped.output) == words(answer)  # the same words: none cut in two
    assert len(lines) > len(answer.split("\n"))

    unwrapped = terminals("run", "greedy", "--nowordwrap", STORY)
    assert unwrapped.wait(ANSWER_TIMEOUT) == 0
    assert shown_lines(unwrapped.output) == answer.rstrip("\n").split("\n")

    piped = run(served, "run", "greedy", STORY)
    assert piped.stdout == answer + "\n"


def test_set_commands_in_the_chat(served: Daemon, terminals: Callable[..., Terminal]) -> None:
    term = terminals("run", "greedy")
    term.expect(re.escape(PROMPT), timeout=30)
    help_text = term.ask("/set")
    for command in ("verbose", "quiet", "format json", "noformat", "history", "nohistory"):
        assert f"/set {command} " in help_text, command
    assert "/set wordwrap" in help_text and "/set nowordwrap" in help_text
    assert "Ctrl + l            Clear the screen" in term.ask("/? shortcuts")

    assert "Set 'verbose' mode." in term.ask("/set verbose")
    assert SUMMARY_RE.search(term.ask(SHORT).replace("\r\n", "\n"))
    assert "Set 'quiet' mode." in term.ask("/set quiet")
    assert "eval rate" not in term.ask(SHORT)

    term.ask("/clear")
    story = chat_answer(served, "greedy", TALE)
    assert max(len(line) for line in story.split("\n")) > COLUMNS  # something to wrap
    shown = answer_lines(term, TALE)
    assert all(len(line) <= COLUMNS - 5 for line in shown), shown
    assert words("\n".join(shown)) == words(story)
    assert "Set 'nowordwrap' mode." in term.ask("/set nowordwrap")
    term.ask("/clear")
    assert answer_lines(term, TALE) == story.rstrip("\n").split("\n")
    assert "Set 'wordwrap' mode." in term.ask("/set wordwrap")
    term.ask("/save told")  # a model whose stored answer is shown wrapped when it is loaded
    term.send("/load told\r")
    term.expect(re.escape(f"Loading model 'told'\r\n{PROMPT}{TALE}\r\n"))
    loaded = shown_lines(term.expect(re.escape(PROMPT))[: -len(PROMPT)])
    assert all(len(line) <= COLUMNS - 5 for line in loaded) and len(loaded) > 1, loaded
    assert words("\n".join(loaded)) == words(story)

    assert "Invalid or missing format." in term.ask("/set format xml")
    assert "Set format to 'json' mode." in term.ask("/set format json")
    term.ask("/clear")
    assert answer_lines(term, "Describe a cat.")[0].lstrip().startswith("{")
    assert "Disabled format." in term.ask("/set noformat")

    assert "Set 'nohistory' mode." in term.ask("/set nohistory")
    term.ask("/set parameter seed 7")
    assert "Set 'history' mode." in term.ask("/set history")
    term.ask("/set parameter seed 8")

    wait_for(term.reading_terminal, timeout=10, what="readline waiting for a key")
    term.send("\x0c")  # Ctrl+L: the terminal's clear sequence, then the prompt again
    term.expect(re.escape("\x1b[H\x1b[2J") + r"[\s\S]*" + re.escape(PROMPT), timeout=10)
    term.send("/bye\r")
    assert term.wait() == 0
    history = (Path(served.env["HOME"]) / ".olla" / "history").read_text()
    assert "seed 8" in history and "seed 7" not in history


def test_run_pulls_a_missing_model_with_the_pull_progress(
    served: Daemon, hub: FakeHub, terminals: Callable[..., Terminal]
) -> None:
    name = f"hf.co/{REPO}"
    term = terminals("run", name, columns=120)
    term.expect(re.escape(PROMPT), timeout=ANSWER_TIMEOUT)  # pulled, then the chat
    sha = hub.file(REPO, GGUF).sha256
    assert "pulling manifest" in term.output and "success" in term.output
    assert re.search(rf"\rpulling {sha[:12]}: 100% ▕█+▏", term.output)  # olla pull's bars
    term.send("/bye\r")
    assert term.wait() == 0
    assert "num_predict" in api(served, "/api/show", {"model": name})["parameters"]
    served_bytes = hub.bytes_served
    again = run(served, "run", name, SHORT)
    assert again.returncode == 0 and again.stdout.strip() and again.stderr == ""
    assert hub.bytes_served == served_bytes  # there: nothing pulled

    other = run(served, "run", "--insecure", f"hf.co/{OTHER_REPO}", SHORT)  # piped: plain lines
    assert other.returncode == 0, other.stderr
    assert other.stderr.splitlines()[0] == "pulling manifest"
    assert other.stderr.splitlines()[-1] == "success" and "\r" not in other.stderr
    assert other.stdout.strip() and "pulling" not in other.stdout

    unknown = run(served, "run", "hf.co/nobody/nothing-GGUF", SHORT)
    assert unknown.returncode == 1 and unknown.stdout == ""
    first, error = unknown.stderr.splitlines()  # as Ollama: the pull's first step, its error
    assert first == "pulling manifest" and error.startswith("Error: ")
    assert "nobody/nothing-GGUF" in error


def test_an_embedding_model_prints_its_vector(
    served: Daemon, smollm2_gguf: Path, tmp_path: Path
) -> None:
    with_pooling(smollm2_gguf, tmp_path / "pooled.gguf")
    (tmp_path / "Modelfile").write_text("FROM ./pooled.gguf\n")
    created = run(served, "create", "pooled", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    assert api(served, "/api/show", {"model": "pooled"})["capabilities"] == ["embedding"]

    done = run(served, "run", "pooled", "The sky is blue.")
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert " " not in line
    vector = json.loads(line)
    [expected] = api(served, "/api/embed", {"model": "pooled", "input": "The sky is blue."})[
        "embeddings"
    ]
    assert len(vector) == len(expected) == 576  # SmolLM2-135M's width
    assert line == "[" + ",".join(go_float32(v) for v in expected) + "]"

    bare = run(served, "run", "pooled")
    assert bare.returncode == 1
    assert "embedding models require input text" in bare.stderr
