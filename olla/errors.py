"""One exception tree for olla; each class carries the HTTP status it maps to.

`olla.server.middleware` is the only place that turns these into responses; the CLI turns them
into one-line messages. Messages say what went wrong and what to do about it.
"""

from __future__ import annotations


class OllaError(Exception):
    """Base of every error olla raises on purpose."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(OllaError):
    """The request is malformed or names something invalid (HTTP 400)."""

    status = 400


class Unauthorized(OllaError):
    """The request has no API key, or one olla does not know (HTTP 401)."""

    status = 401


class Forbidden(OllaError):
    """The request's API key may not do this, or its origin is not allowed (HTTP 403)."""

    status = 403


class InvalidName(InvalidRequest):
    """A model name does not follow `[host/][namespace/]model[:tag]`."""


class InvalidDigest(InvalidRequest):
    """A blob digest is not `sha256:<64 hex>` or does not match the content."""


class ModelfileError(InvalidRequest):
    """A Modelfile could not be parsed; `line` is 1-based (0 when not tied to a line)."""

    line: int = 0
    detail: str = ""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.detail = message


class InvalidModelFile(InvalidRequest):
    """A model file (GGUF) is missing, truncated or not a model at all."""


class NotFound(OllaError):
    """Something the request refers to does not exist (HTTP 404)."""

    status = 404


class ModelNotFound(NotFound):
    """No manifest for the model name."""

    name: str = ""

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found, try `olla pull {name}`")
        self.name = name


class BlobNotFound(NotFound):
    """No blob with the digest in the store."""


class Conflict(OllaError):
    """The request conflicts with the store's state (HTTP 409)."""

    status = 409


class PayloadTooLarge(OllaError):
    """The request body is over the configured limit (HTTP 413)."""

    status = 413


class Overloaded(OllaError):
    """The server is too busy to take the request now (HTTP 503 with Retry-After)."""

    status = 503
    retry_after: float = 1.0  # seconds

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyRequests(Overloaded):
    """One user asks for more than its share (HTTP 429 with Retry-After)."""

    status = 429


class RequestTimeout(OllaError):
    """A generation ran past the operator's time limit (OLLA_REQUEST_TIMEOUT)."""

    status = 504


class NotSupported(OllaError):
    """The request asks for something olla does not do (HTTP 501)."""

    status = 501


class StorageError(OllaError):
    """The model store could not be written, e.g. the disk is full (HTTP 507)."""

    status = 507


class UpstreamError(OllaError):
    """An upstream service (Hugging Face) could not be reached, failed, or sent bad data (502)."""

    status = 502


class Interrupted(OllaError):
    """Work stopped because every client that wanted it left, or olla is stopping (499)."""

    status = 499


class ModelLoadError(OllaError):
    """A model could not be loaded (HTTP 500)."""


class InsufficientMemory(ModelLoadError):
    """A model cannot fit in olla's memory budgets even with nothing else loaded (HTTP 507)."""

    status = 507


class RunnerCrashed(OllaError):
    """A model's runner process died while serving requests (HTTP 500)."""


class ConfigError(OllaError):
    """A setting from the config file, the environment or a flag is invalid."""

    status = 400


class DaemonUnavailable(OllaError):
    """The CLI could not reach the daemon."""

    status = 503


# HTTP statuses as the client sees them, for a daemon's error that carries no class name
_BY_STATUS: dict[int, type[OllaError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
    499: Interrupted,
    501: NotSupported,
    503: Overloaded,
    504: RequestTimeout,
    507: StorageError,
    502: UpstreamError,
}


def _subclasses(cls: type[OllaError]) -> list[type[OllaError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))]


def error_from(status: int, message: str, kind: str | None = None) -> OllaError:
    """The error a peer reported: of class `kind` (its name, as `error_kind` gives it) when it
    is one of olla's, else the class of its HTTP status; the message and status as reported.

    The one mapping from a reported error back to a class, for the daemon (a runner's error
    lines) and the CLI's client (the daemon's statuses).
    """
    by_name = {cls.__name__: cls for cls in _subclasses(OllaError)}
    cls = by_name.get(kind or "") or _BY_STATUS.get(status, OllaError)
    exc = cls.__new__(cls)  # bypass subclasses' own signatures: the message is already whole
    OllaError.__init__(exc, message)
    exc.status = status
    return exc


def error_kind(exc: OllaError) -> str:
    """The name `error_from` knows the error's class by."""
    return type(exc).__name__
