"""What the command line sets, and the constants every part of the bench shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


SERVER_NAMES = ("olla", "llama-server", "llama-cpp-python")


BASELINE = "llama-server"


RESULTS_BEGIN = "<!-- bench:results:begin -->"


RESULTS_END = "<!-- bench:results:end -->"


@dataclass(frozen=True)
class Options:
    """Everything the command line sets."""

    model: Path
    threads: int
    clients: list[int]
    max_tokens: int
    requests_per_client: int
    servers: list[str]
    repeat: int
    ctx_per_seq: int
    markdown: bool
    out: Path | None
    shared_prefix: bool
    long_prompt_interference: bool
    interference_streams: int
    llama_server: str | None
    llama_server_args: list[str]
    start_timeout: float
    request_timeout: float
    repeat_penalty: float | None
    argv: list[str]
    flash_attention: str | None = None  # "on"/"off" for every server; None: each one's default
    gpu: bool = False  # every layer on the GPU (llama-server -ngl 999; olla places it itself)

    @property
    def parallel(self) -> int:
        """Sequences each server must serve at once: the most clients, plus the long prompt."""
        extra = self.interference_streams + 1 if self.long_prompt_interference else 0
        return max(max(self.clients), extra)


def default_model() -> Path | None:
    """The embedded SmolLM2-135M GGUF, found without importing its package."""
    from olla.errors import InvalidRequest
    from olla.registry.sources import DEFAULT_MODEL_FILE, package_file

    try:
        return package_file(DEFAULT_MODEL_FILE)
    except InvalidRequest:
        return None
