"""The messages between the daemon and a runner, one class each, decoded once on arrival.

Daemon -> runner, requests tagged with the id the daemon gave them:
  `Submit`  generate from a prompt: `Chunk`s, then `Done`
  `Embed`   embed some inputs: one `Embeddings`
  `Cancel`  stop a submitted request; its sequence is freed
  `Count`   how many tokens each text is, as a prompt: one `Reply` {"tokens": [...]}
  `Query`   `health` or `stats`: one `Reply`
Runner -> daemon, events tagged with their request's id:
  `Accepted`    a `Submit` with `direct` is valid: the daemon may hand the client's socket over
  `Chunk`       text the detokenizer released, with its tokens' log-probabilities when asked
  `Done`        the request ended: why, its counts and timings
  `Embeddings`  the vectors of an `Embed`
  `Reply`       the answer to a `Query`
  `Failure`     the request failed: the message, the HTTP status and the class of olla's error,
                so the error keeps its class across the process boundary (`Failure.error`)

Each is one JSON line (`olla.wire.lines`) whose `op` (a request) or `event` names its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from olla.errors import OllaError, Overloaded, error_from, error_kind


@dataclass(frozen=True, slots=True)
class Direct:
    """Where a direct stream's lines go and how they read (`olla.runner.direct`)."""

    model: str  # the name each line carries
    kind: str  # "message" (/api/chat) or "response" (/api/generate)


@dataclass(frozen=True, slots=True)
class Submit:
    """Generate a completion of `prompt` (after `context`, token ids a reply gave)."""

    prompt: str
    options: dict[str, Any]
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema: a grammar
    context: tuple[int, ...] = ()
    logprobs: int | None = None  # alternatives to report per token; None: no log-probabilities
    user: str = ""  # the engine admits users' requests in turn
    direct: Direct | None = None  # the runner writes the client's stream itself
    # a prompt longer than the context is cut to fit (else a 400), as Ollama's `truncate`
    truncate: bool = True
    # a sequence that fills its context drops its older half and goes on (else it ends with
    # done_reason "length"), as Ollama's `shift`
    shift: bool = True
    # images, base64 of the files as sent (checked by the daemon); the prompt names image i
    # with the tag `[img-i]` where it goes, as Ollama's prompts do (olla.images.IMAGE_TAG)
    images: tuple[str, ...] = ()
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": "submit", "id": self.id, "prompt": self.prompt}
        out["truncate"], out["shift"] = self.truncate, self.shift
        out["options"] = self.options
        if self.format:
            out["format"] = self.format
        if self.context:
            out["context"] = list(self.context)
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        if self.user:
            out["user"] = self.user
        if self.direct is not None:
            out["direct"] = {"model": self.direct.model, "kind": self.direct.kind}
        if self.images:
            out["images"] = list(self.images)
        return out


@dataclass(frozen=True, slots=True)
class Embed:
    """Embed each of `inputs`; `truncate` cuts one that is too long instead of refusing it;
    `normalize` scales each vector to length 1 (all but Ollama's older /api/embeddings)."""

    inputs: tuple[str, ...]
    truncate: bool = True
    normalize: bool = True
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "embed",
            "id": self.id,
            "inputs": list(self.inputs),
            "truncate": self.truncate,
            "normalize": self.normalize,
        }


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop request `id` and free its sequence."""

    id: int

    def to_json(self) -> dict[str, Any]:
        return {"op": "cancel", "id": self.id}


@dataclass(frozen=True, slots=True)
class Count:
    """How many tokens each of `texts` is as a prompt (special tokens added): the daemon fits a
    chat into the context with it (olla.server.truncation)."""

    texts: tuple[str, ...]
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"op": "count", "id": self.id, "texts": list(self.texts)}


@dataclass(frozen=True, slots=True)
class Query:
    """A one-answer question: `health` or `stats`."""

    op: str
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id}


Request: TypeAlias = Submit | Embed | Cancel | Count | Query
QUERIES = ("health", "stats")


@dataclass(frozen=True, slots=True)
class Logprob:
    """A token's log-probability as Ollama and OpenAI show it, with its best alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[Logprob, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """`{"token", "logprob", "bytes", "top_logprobs"}`; alternatives have no such list."""
        out: dict[str, Any] = {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
        }
        out["top_logprobs"] = [_alternative(t) for t in self.top]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Logprob:
        top = tuple(cls(t["token"], t["logprob"], tuple(t["bytes"])) for t in data["top_logprobs"])
        return cls(data["token"], data["logprob"], tuple(data["bytes"]), top)


def _alternative(entry: Logprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes)}


@dataclass(frozen=True, slots=True)
class Accepted:
    id: int

    def to_json(self) -> dict[str, Any]:
        return {"event": "accepted", "id": self.id}


@dataclass(frozen=True, slots=True)
class Chunk:
    id: int
    text: str
    logprobs: tuple[Logprob, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": "chunk", "id": self.id, "text": self.text}
        if self.logprobs:
            out["logprobs"] = [entry.to_json() for entry in self.logprobs]
        return out


@dataclass(frozen=True, slots=True)
class Done:
    """The end of a generation. Durations in nanoseconds: prompt eval from submission to the
    first token, eval from there to the end; `chunks_ns`, a direct stream's chunk times."""

    id: int
    done_reason: str
    prompt_eval_count: int = 0
    prompt_cached_count: int = 0
    eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    context: tuple[int, ...] = ()
    chunks_ns: tuple[int, ...] = ()
    stop_sequence: str = ""  # the stop string that ended it (done_reason "stop"), if one did

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "done",
            "id": self.id,
            "done_reason": self.done_reason,
            "stop_sequence": self.stop_sequence,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_cached_count": self.prompt_cached_count,
            "eval_count": self.eval_count,
            "prompt_eval_duration": self.prompt_eval_duration,
            "eval_duration": self.eval_duration,
            "context": list(self.context),
            "chunks_ns": list(self.chunks_ns),
        }


@dataclass(frozen=True, slots=True)
class Embeddings:
    id: int
    embeddings: list[list[float]]
    prompt_eval_count: int
    duration: int = 0  # nanoseconds

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "embeddings",
            "id": self.id,
            "embeddings": self.embeddings,
            "prompt_eval_count": self.prompt_eval_count,
            "duration": self.duration,
        }


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"event": "reply", "id": self.id, "data": self.data}


@dataclass(frozen=True, slots=True)
class Failure:
    id: int
    message: str
    status: int = 500
    kind: str = ""  # the olla error's class name
    retry_after: float | None = None  # seconds, for a refusal the client may retry (503, 429)

    @classmethod
    def of(cls, request_id: int, exc: OllaError) -> Failure:
        retry_after = exc.retry_after if isinstance(exc, Overloaded) else None
        return cls(request_id, exc.message, exc.status, error_kind(exc), retry_after)

    def error(self) -> OllaError:
        """The error as the runner raised it: same class, message, status and Retry-After."""
        exc = error_from(self.status, self.message, self.kind or None)
        if isinstance(exc, Overloaded) and self.retry_after is not None:
            exc.retry_after = self.retry_after
        return exc

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": "error", "id": self.id, "error": self.message}
        out.update(status=self.status, kind=self.kind)
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


Event: TypeAlias = Accepted | Chunk | Done | Embeddings | Reply | Failure


class ProtocolError(ValueError):
    """A message that is not one of the protocol's."""


def decode_request(data: dict[str, Any]) -> Request:
    """A request as the runner reads it; ProtocolError for anything else."""
    op, request_id = data.get("op"), data.get("id")
    if not isinstance(request_id, int):
        raise ProtocolError(f"a request needs an integer id, not {request_id!r}")
    try:
        if op == "submit":
            return _submit(data, request_id)
        if op == "embed":
            return _embed(data, request_id)
        if op == "count":
            return _count(data, request_id)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"a malformed {op} request: {exc!r}") from None
    if op == "cancel":
        return Cancel(request_id)
    if op in QUERIES:
        return Query(op, request_id)
    raise ProtocolError(f"unknown op {op!r}")


def _submit(data: dict[str, Any], request_id: int) -> Submit:
    direct = data.get("direct")
    return Submit(
        prompt=str(data.get("prompt", "")),
        options=dict(data.get("options") or {}),
        format=data.get("format"),
        context=tuple(data.get("context") or ()),
        logprobs=data.get("logprobs"),
        user=str(data.get("user", "")),
        direct=None if direct is None else Direct(str(direct["model"]), str(direct["kind"])),
        truncate=bool(data.get("truncate", True)),
        shift=bool(data.get("shift", True)),
        images=tuple(str(image) for image in data.get("images") or ()),
        id=request_id,
    )


def _count(data: dict[str, Any], request_id: int) -> Count:
    texts = data["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ProtocolError("count: texts must be a list of strings")
    return Count(tuple(texts), request_id)


def _embed(data: dict[str, Any], request_id: int) -> Embed:
    inputs = data["inputs"]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise ProtocolError("embed: inputs must be a list of strings")
    truncate, normalize = bool(data.get("truncate", True)), bool(data.get("normalize", True))
    return Embed(tuple(inputs), truncate, normalize, request_id)


def decode_event(data: dict[str, Any]) -> Event:
    """An event as the daemon reads it; ProtocolError for anything else."""
    kind, request_id = data.get("event"), int(data["id"])
    if kind == "chunk":
        entries = data.get("logprobs")
        logprobs = tuple(Logprob.from_json(e) for e in entries) if entries else ()
        return Chunk(request_id, data["text"], logprobs)
    if kind == "done":
        return _done(data, request_id)
    if kind == "accepted":
        return Accepted(request_id)
    if kind == "error":
        status, error_class = int(data.get("status", 500)), str(data.get("kind", ""))
        retry_after = data.get("retry_after")
        retry = None if retry_after is None else float(retry_after)
        return Failure(request_id, str(data["error"]), status, error_class, retry)
    if kind == "embeddings":
        vectors, count = data["embeddings"], int(data["prompt_eval_count"])
        return Embeddings(request_id, vectors, count, int(data.get("duration", 0)))
    if kind == "reply":
        return Reply(request_id, dict(data.get("data") or {}))
    raise ProtocolError(f"unknown event {kind!r}")


def _done(data: dict[str, Any], request_id: int) -> Done:
    return Done(
        id=request_id,
        done_reason=str(data["done_reason"]),
        prompt_eval_count=int(data["prompt_eval_count"]),
        prompt_cached_count=int(data.get("prompt_cached_count", 0)),
        eval_count=int(data["eval_count"]),
        prompt_eval_duration=int(data["prompt_eval_duration"]),
        eval_duration=int(data["eval_duration"]),
        context=tuple(data.get("context") or ()),
        chunks_ns=tuple(data.get("chunks_ns") or ()),
        stop_sequence=str(data.get("stop_sequence", "")),
    )
