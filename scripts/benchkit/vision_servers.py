"""The two servers of the vision bench, each given the text model and its projector.

Both are sent the same OpenAI chat requests on `/v1/chat/completions` (an image as an
`image_url` part with a data URI) and stream the same SSE format; what differs is how the
projector is given (llama-server `--mmproj`, olla a second `FROM` line in the Modelfile, as
Ollama takes it) and where the repeat penalty goes (olla's OpenAI route takes no
`repeat_penalty`, so it is a Modelfile parameter there).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchkit.options import Options
from benchkit.servers import Chunk, LlamaServer, Olla, build_llama_server, sse_data

Message = dict[str, Any]


def chat_chunk(line: str) -> Chunk | None:
    """One line of an OpenAI chat completion stream (SSE), None where it carries nothing."""
    data = sse_data(line)
    if data is None or data == "[DONE]":
        return None if data is None else Chunk(done=True)
    if "error" in data:
        return Chunk(done=True, error=json.dumps(data["error"])[:300])
    usage = data.get("usage") or {}
    choice = (data.get("choices") or [{}])[0]
    return Chunk(
        text=(choice.get("delta") or {}).get("content") or "",
        num_tokens=usage.get("completion_tokens"),
    )


def chat_body(messages: list[Message], max_tokens: int) -> dict[str, Any]:
    """A greedy streamed chat request, as both servers take it."""
    return {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}


class VisionLlamaServer(LlamaServer):
    """llama-server with `--mmproj`, sent OpenAI chat requests."""

    endpoint = "/v1/chat/completions"

    def __init__(self, binary: str, projector: Path, repeat_penalty: float) -> None:
        super().__init__(binary)
        self.projector, self.repeat_penalty = projector, repeat_penalty

    def command(self, opts: Options, port: int) -> list[str]:
        return [*super().command(opts, port), "--mmproj", str(self.projector)]

    def chat(self, messages: list[Message], max_tokens: int) -> dict[str, Any]:
        """The body of a chat request; `cache_prompt` is its default, sent to say so."""
        body = chat_body(messages, max_tokens)
        return {**body, "repeat_penalty": self.repeat_penalty, "cache_prompt": True}

    def payload(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        return self.chat([{"role": "user", "content": prompt}], max_tokens)

    def parse(self, line: str, max_tokens: int) -> Chunk | None:
        return chat_chunk(line)


class VisionOlla(Olla):
    """olla serve with a model created from two FROM lines: the text model and its projector."""

    endpoint = "/v1/chat/completions"

    def __init__(self, projector: Path, repeat_penalty: float) -> None:
        super().__init__()
        self.projector, self.repeat_penalty = projector, repeat_penalty

    def setup(self, opts: Options, port: int, workdir: Path) -> None:
        # relative FROM paths, resolved against the Modelfile's folder, as Ollama's are
        for name, target in (("model.gguf", opts.model), ("mmproj.gguf", self.projector)):
            (workdir / name).symlink_to(target)
        modelfile = workdir / "Modelfile"
        modelfile.write_text(
            "FROM ./model.gguf\nFROM ./mmproj.gguf\n"
            f"PARAMETER num_thread {opts.threads}\n"
            f"PARAMETER repeat_penalty {self.repeat_penalty}\n"
        )
        out = subprocess.run(
            [*self.olla, "create", "bench", "-f", str(modelfile)],
            cwd=workdir,
            env=self.env(opts, port, workdir),
            capture_output=True,
            text=True,
            timeout=opts.start_timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"olla create failed ({out.returncode}): {out.stderr[-1500:]}")

    def chat(self, messages: list[Message], max_tokens: int) -> dict[str, Any]:
        """The body of a chat request to the model `setup` created."""
        return {"model": "bench", **chat_body(messages, max_tokens)}

    def payload(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        return self.chat([{"role": "user", "content": prompt}], max_tokens)

    def parse(self, line: str, max_tokens: int) -> Chunk | None:
        return chat_chunk(line)


VisionFlavor = VisionLlamaServer | VisionOlla


def vision_flavors(
    names: list[str], llama_server: str | None, projector: Path, repeat_penalty: float
) -> Iterator[VisionFlavor | str]:
    """The servers asked for, in order; a string where one cannot even be prepared."""
    for name in names:
        if name == "olla":
            yield VisionOlla(projector, repeat_penalty)
            continue
        try:
            yield VisionLlamaServer(llama_server or build_llama_server(), projector, repeat_penalty)
        except (RuntimeError, OSError) as exc:
            yield f"{exc}"
