"""The servers: how each is started and stopped, what it is sent, how its stream reads.

olla, llama.cpp's llama-server and llama-cpp-python's server differ in their command line,
readiness probe, request body and stream format (a `Flavor` each); `ServerProcess` runs any of
them through `olla.testing.Daemon`, in a process group of its own.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.options import REPO, Options
from olla.testing import Daemon, free_port


@dataclass
class Chunk:
    """One parsed line of a response stream."""

    text: str = ""
    done: bool = False
    num_tokens: int | None = None  # the server's own count of generated tokens, when it gives one
    error: str | None = None


class Flavor:
    """What differs between servers: command line, readiness probe, request and stream format."""

    name = ""
    ready_path = "/"
    endpoint = "/"
    repeat_penalty: float | None = None  # sent with every request when set (--repeat-penalty)

    def command(self, opts: Options, port: int) -> list[str]:
        raise NotImplementedError

    def env(self, opts: Options, port: int, workdir: Path) -> dict[str, str]:
        return dict(os.environ)

    def setup(self, opts: Options, port: int, workdir: Path) -> None:
        """Runs once the server answers its readiness probe."""

    def payload(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, line: str, max_tokens: int) -> Chunk | None:
        raise NotImplementedError

    def version(self, opts: Options) -> str:
        raise NotImplementedError


def with_penalty(body: dict[str, Any], repeat_penalty: float | None) -> dict[str, Any]:
    """All three servers name the option `repeat_penalty`."""
    return body if repeat_penalty is None else {**body, "repeat_penalty": repeat_penalty}


def sse_data(line: str) -> Any:
    """The JSON of an SSE `data:` line; None for other lines, "[DONE]" for the end marker."""
    line = line.strip()
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return "[DONE]" if data == "[DONE]" else json.loads(data)


class LlamaServer(Flavor):
    """llama.cpp's own server: slots with continuous batching; SSE from POST /completion."""

    name = "llama-server"
    ready_path = "/health"
    endpoint = "/completion"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def command(self, opts: Options, port: int) -> list[str]:
        ctx = opts.parallel * opts.ctx_per_seq
        return [
            self.binary,
            "-m",
            str(opts.model),
            "-t",
            str(opts.threads),
            "-c",
            str(ctx),
            "-np",
            str(opts.parallel),
            "--cont-batching",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *(["-ngl", "999"] if opts.gpu else []),
            *(["-fa", opts.flash_attention] if opts.flash_attention else []),
            *opts.llama_server_args,
        ]

    def payload(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        body = {
            "prompt": prompt,
            "n_predict": max_tokens,
            "temperature": 0,
            "stream": True,
            "cache_prompt": True,
        }
        return with_penalty(body, self.repeat_penalty)

    def parse(self, line: str, max_tokens: int) -> Chunk | None:
        data = sse_data(line)
        if data is None or data == "[DONE]":
            return None if data is None else Chunk(done=True)
        if "error" in data:
            return Chunk(done=True, error=json.dumps(data["error"])[:300])
        done = bool(data.get("stop"))
        return Chunk(
            text=data.get("content", ""),
            done=done,
            num_tokens=data.get("tokens_predicted") if done else None,
        )

    def version(self, opts: Options) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=30)
        lines = [x for x in (out.stdout + out.stderr).splitlines() if x.startswith("version")]
        return f"llama-server {lines[0].removeprefix('version: ') if lines else '?'}"


class LlamaCppPython(Flavor):
    """llama-cpp-python's OpenAI-style server: one request at a time; SSE from /v1/completions."""

    name = "llama-cpp-python"
    ready_path = "/v1/models"
    endpoint = "/v1/completions"

    def command(self, opts: Options, port: int) -> list[str]:
        # It serves one sequence at a time, so each request gets the per-sequence context. By
        # default a new request cuts the stream in progress short (interrupt_requests); a
        # benchmark wants them served in turn.
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(opts.model),
            "--n_threads",
            str(opts.threads),
            "--n_threads_batch",
            str(opts.threads),
            "--n_ctx",
            str(opts.ctx_per_seq),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--interrupt_requests",
            "False",
            *(["--flash_attn", str(opts.flash_attention == "on")] if opts.flash_attention else []),
        ]

    def payload(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        return with_penalty(body, self.repeat_penalty)

    def parse(self, line: str, max_tokens: int) -> Chunk | None:
        data = sse_data(line)
        if data is None or data == "[DONE]":
            return None if data is None else Chunk(done=True)
        if "error" in data:
            return Chunk(done=True, error=json.dumps(data["error"])[:300])
        choice = (data.get("choices") or [{}])[0]
        # No token count in the stream; a "length" finish means exactly max_tokens, otherwise
        # the text chunks are counted (one per token, except where UTF-8 pieces are merged).
        finished = choice.get("finish_reason")
        return Chunk(
            text=choice.get("text") or "", num_tokens=max_tokens if finished == "length" else None
        )

    def version(self, opts: Options) -> str:
        return f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')} (server)"


class Olla(Flavor):
    """olla serve: the Ollama API; NDJSON from POST /api/generate."""

    name = "olla"
    ready_path = "/api/version"
    endpoint = "/api/generate"

    def __init__(self) -> None:
        self.olla = [sys.executable, "-m", "olla"]  # works without the console script too

    def command(self, opts: Options, port: int) -> list[str]:
        return [*self.olla, "serve"]

    def env(self, opts: Options, port: int, workdir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "OLLA_HOST": f"127.0.0.1:{port}",
            "OLLA_MODELS": str(workdir / "models"),
            "OLLA_NUM_PARALLEL": str(opts.parallel),
            "OLLA_CONTEXT_LENGTH": str(opts.ctx_per_seq),
            "OLLA_KEEP_ALIVE": "-1",  # no unload between levels
            "XDG_CONFIG_HOME": str(workdir / "config"),  # no user config.yaml
            **(
                {"OLLA_FLASH_ATTENTION": "true" if opts.flash_attention == "on" else "false"}
                if opts.flash_attention
                else {}
            ),
        }

    def setup(self, opts: Options, port: int, workdir: Path) -> None:
        modelfile = workdir / "Modelfile"
        modelfile.write_text(f"FROM {opts.model}\nPARAMETER num_thread {opts.threads}\n")
        out = subprocess.run(
            [*self.olla, "create", "bench", "-f", str(modelfile)],
            env=self.env(opts, port, workdir),
            capture_output=True,
            text=True,
            timeout=opts.start_timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"olla create failed ({out.returncode}): {out.stderr[-1500:]}")

    def payload(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        options = with_penalty({"temperature": 0, "num_predict": max_tokens}, self.repeat_penalty)
        return {"model": "bench", "prompt": prompt, "raw": True, "stream": True, "options": options}

    def parse(self, line: str, max_tokens: int) -> Chunk | None:
        if not line.strip():
            return None
        data = json.loads(line)
        if "error" in data:
            return Chunk(done=True, error=str(data["error"])[:300])
        done = bool(data.get("done"))
        return Chunk(
            text=data.get("response", ""),
            done=done,
            num_tokens=data.get("eval_count") if done else None,
        )

    def version(self, opts: Options) -> str:
        import olla

        return f"olla {olla.__version__} ({git_revision()})"


def git_revision() -> str:
    """The checkout's commit, and whether olla/ has uncommitted changes."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return out.stdout.strip()

    return f"git {git('rev-parse', '--short', 'HEAD') or '?'}" + (
        ", with uncommitted changes" if git("status", "--porcelain", "--", "olla") else ""
    )


def build_llama_server() -> str:
    """The llama-server binary, built by scripts/build_llama_server.sh unless already built."""
    script = REPO / "scripts" / "build_llama_server.sh"
    print(f"# llama-server: {script} (reuses an earlier build)", file=sys.stderr)
    out = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"{script} failed ({out.returncode})")
    return out.stdout.strip().splitlines()[-1]


class ServerProcess:
    """One server started by the bench, in its own process group, logging to a file."""

    def __init__(self, flavor: Flavor, opts: Options, workdir: Path) -> None:
        self.flavor, self.opts, self.workdir = flavor, opts, workdir
        self.port = free_port()
        self.argv = flavor.command(opts, self.port)
        self.daemon = Daemon(
            host=f"127.0.0.1:{self.port}",
            env=flavor.env(opts, self.port, workdir),
            log_path=workdir / f"{flavor.name}.log",
            command=self.argv,
            ready_path=flavor.ready_path,
            own_group=True,  # its own group: Ctrl-C reaches only the bench, which stops it
            name=flavor.name,
        )

    @property
    def pgid(self) -> int | None:
        """Its process group (its pid): what the other-load sample leaves out."""
        return None if self.daemon.process is None else self.daemon.process.pid

    @property
    def base_url(self) -> str:
        return self.daemon.base_url

    def start(self) -> None:
        """Launch it; `wait_ready` waits for its probe."""
        self.daemon.launch()

    async def wait_ready(self) -> None:
        """Until its probe answers 200; DaemonUnavailable if it exits or --start-timeout passes."""
        await asyncio.to_thread(self.daemon.wait_ready, self.opts.start_timeout, 0.2)

    def stop(self) -> None:
        """SIGTERM to the process group we started, then SIGKILL after 10 seconds."""
        self.daemon.shutdown(grace=10.0)

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of its log, for a failure message."""
        try:
            text = self.daemon.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def flavors(opts: Options) -> Iterator[Flavor | str]:
    """The servers asked for, in order; a string where one cannot even be prepared."""
    for name in opts.servers:
        flavor: Flavor
        if name == "olla":
            flavor = Olla()
        elif name == "llama-cpp-python":
            flavor = LlamaCppPython()
        else:
            try:
                flavor = LlamaServer(opts.llama_server or build_llama_server())
            except (RuntimeError, OSError) as exc:
                yield f"{exc}"
                continue
        flavor.repeat_penalty = opts.repeat_penalty
        yield flavor
