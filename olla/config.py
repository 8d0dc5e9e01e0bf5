"""Settings: defaults, then a YAML file, then `OLLA_*` environment, then CLI flags.

One table (`SETTINGS`) names every setting once; it drives the YAML keys, the environment
variables, the `olla serve` flags and the docs, so they cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from olla.address import DEFAULT_PORT, HostAddress
from olla.errors import ConfigError
from olla.units import Budget, format_duration, parse_duration, parse_size


def _parse_int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_context_length(value: Any) -> int | None:
    """A context length of at least 256 tokens, or None for "auto" (also 0, as Ollama reads it)."""
    if str(value).strip().lower() in ("auto", "0"):
        return None
    return _parse_int(256)(value)


def _parse_path(value: Any) -> Path:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return Path(os.path.expanduser(text)).absolute()


KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def parse_cache_type(value: Any) -> str | None:
    """A KV cache type, or None for "auto" (f16 on a GPU, CPU_CACHE_TYPE on the CPU)."""
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text not in KV_CACHE_TYPES:
        raise ValueError(f"unknown KV cache type {value!r}; use auto, {', '.join(KV_CACHE_TYPES)}")
    return text


def parse_switch(value: Any) -> bool | None:
    """true/false, or None for "auto"."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    return _parse_bool(value)


def _parse_origins(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _parse_allowed_hosts(value: Any) -> tuple[str, ...]:
    """Host names (`*` globs) and addresses, lower case, as the Host check compares them."""
    out = []
    for item in _parse_origins(value):
        name = item.lower().removeprefix("[").removesuffix("]").removesuffix(".")
        try:
            out.append(ipaddress.ip_address(name).compressed)
            continue
        except ValueError:
            pass
        if not name or name.strip("abcdefghijklmnopqrstuvwxyz0123456789.-_*"):
            raise ValueError(
                f"{item!r} is not a host name or address: write names without scheme or port, "
                "e.g. olla.example.com or *.example.com"
            )
        out.append(name)
    return tuple(out)


def _parse_registry(value: Any) -> str:
    """An Ollama-protocol registry's base URL: http(s)://host[:port][/prefix], no trailing '/'."""
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError("expected a base URL such as https://registry.ollama.ai")
    return text


def _parse_host(value: Any) -> HostAddress:
    return value if isinstance(value, HostAddress) else HostAddress.parse(str(value))


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its field name, environment variable, parser and help text."""

    name: str
    env: str
    parse: Callable[[Any], Any]
    help: str
    default_text: str


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "host",
        "OLLA_HOST",
        _parse_host,
        "address to listen on / connect to: host:port, http://host:port or unix:/path",
        f"127.0.0.1:{DEFAULT_PORT}",
    ),
    SettingSpec(
        "models", "OLLA_MODELS", _parse_path, "directory of the model store", "~/.olla/models"
    ),
    SettingSpec(
        "registry",
        "OLLA_REGISTRY",
        _parse_registry,
        "base URL of the Ollama-protocol registry that names without a host are pulled from "
        "(a mirror; plain http only on loopback, or with a pull's insecure)",
        "https://registry.ollama.ai",
    ),
    SettingSpec(
        "keep_alive",
        "OLLA_KEEP_ALIVE",
        parse_duration,
        'how long an idle model stays loaded ("5m", "1h", 0 unloads, -1 forever)',
        "5m",
    ),
    SettingSpec(
        "num_parallel",
        "OLLA_NUM_PARALLEL",
        _parse_int(1),
        "sequences served at once per model",
        "4",
    ),
    SettingSpec(
        "num_threads",
        "OLLA_NUM_THREADS",
        _parse_int(0),
        "llama.cpp threads of each model on the CPU (option num_thread overrides); 0: olla's "
        "choice, the physical cores where SMT leaves siblings spare, else the CPUs olla may "
        "use less one",
        "0",
    ),
    SettingSpec(
        "kv_unified",
        "OLLA_KV_UNIFIED",
        parse_switch,
        "one KV cell pool for all of a model's sequences instead of one stream each: "
        "auto (on a GPU: prompts batch in one pass; on the CPU a stream each decodes "
        "faster), true, false",
        "auto",
    ),
    SettingSpec(
        "max_loaded_models",
        "OLLA_MAX_LOADED_MODELS",
        _parse_int(1),
        "models kept loaded at once",
        "3",
    ),
    SettingSpec(
        "ram_budget",
        "OLLA_RAM_BUDGET",
        Budget.parse,
        'RAM all loaded models may take: bytes, "8GiB" or a share "75%"',
        "75%",
    ),
    SettingSpec(
        "vram_budget",
        "OLLA_VRAM_BUDGET",
        Budget.parse,
        'memory of each GPU loaded models may take: bytes, "8GiB" or a share "90%"',
        "90%",
    ),
    SettingSpec(
        "kv_cache_type",
        "OLLA_KV_CACHE_TYPE",
        parse_cache_type,
        "KV cache precision: auto (f16), f16, bf16, q8_0, q4_0, f32",
        "auto",
    ),
    SettingSpec(
        "flash_attention",
        "OLLA_FLASH_ATTENTION",
        parse_switch,
        "flash attention: auto (llama.cpp's choice: on where supported), true, false",
        "auto",
    ),
    SettingSpec(
        "max_queue",
        "OLLA_MAX_QUEUE",
        _parse_int(1),
        "requests that may wait for a model before 503",
        "512",
    ),
    SettingSpec(
        "queue_timeout",
        "OLLA_QUEUE_TIMEOUT",
        parse_duration,
        'longest a request may wait for its model to have room or a free sequence ("2m"), '
        "then 503 with Retry-After; 0: no limit",
        "2m",
    ),
    SettingSpec(
        "max_user_requests",
        "OLLA_MAX_USER_REQUESTS",
        _parse_int(0),
        "generation requests one user (API key, else client address) may have running "
        "at once; 0: no limit",
        "0",
    ),
    SettingSpec(
        "max_user_queue",
        "OLLA_MAX_USER_QUEUE",
        _parse_int(0),
        "requests of one user that may wait beyond OLLA_MAX_USER_REQUESTS before 429",
        "8",
    ),
    SettingSpec(
        "max_predict",
        "OLLA_MAX_PREDICT",
        _parse_int(0),
        "most tokens one request may generate (num_predict, max_tokens are capped); "
        "0: no cap (a generation that shifts its context stops at 10 contexts, as Ollama)",
        "0",
    ),
    SettingSpec(
        "request_timeout",
        "OLLA_REQUEST_TIMEOUT",
        parse_duration,
        'longest one generation may run once its model is loaded ("10m"); 0: no limit',
        "0",
    ),
    SettingSpec(
        "context_length",
        "OLLA_CONTEXT_LENGTH",
        _parse_context_length,
        "default context window (num_ctx) in tokens; auto: by the GPUs' total memory (4096, "
        "32768 from 23 GiB, 262144 from 47 GiB), never past the model's trained context",
        "auto",
    ),
    SettingSpec(
        "max_request_bytes",
        "OLLA_MAX_REQUEST_BYTES",
        parse_size,
        "largest JSON request body (blob uploads are streamed and exempt)",
        "16MiB",
    ),
    SettingSpec("debug", "OLLA_DEBUG", _parse_bool, "log at debug level", "false"),
    SettingSpec("home", "OLLA_HOME", _parse_path, "olla's own directory (API keys)", "~/.olla"),
    SettingSpec(
        "origins",
        "OLLA_ORIGINS",
        _parse_origins,
        "browser origins allowed besides localhost's, comma-separated; * globs",
        "(localhost only)",
    ),
    SettingSpec(
        "allowed_hosts",
        "OLLA_ALLOWED_HOSTS",
        _parse_allowed_hosts,
        "names a loopback daemon answers to besides this machine's (the Host check against "
        "DNS rebinding), comma-separated; * globs",
        "(this machine's)",
    ),
    SettingSpec(
        "ui",
        "OLLA_UI",
        _parse_bool,
        "serve the web chat page at /ui/ (--no-ui: off, /ui/ is a 404)",
        "true",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Every setting olla reads; built once by `load_settings` and passed down."""

    host: HostAddress = field(default_factory=HostAddress)
    models: Path = field(default_factory=lambda: Path.home() / ".olla" / "models")
    registry: str = "https://registry.ollama.ai"
    keep_alive: float = 300.0
    num_parallel: int = 4
    num_threads: int = 0
    kv_unified: bool | None = None
    max_loaded_models: int = 3
    ram_budget: Budget = Budget(share=0.75)
    vram_budget: Budget = Budget(share=0.90)
    kv_cache_type: str | None = None
    flash_attention: bool | None = None
    max_queue: int = 512
    queue_timeout: float = 120.0
    max_user_requests: int = 0
    max_user_queue: int = 8
    max_predict: int = 0
    request_timeout: float = 0.0
    context_length: int | None = None  # None: auto (runtime/auto_context.py)
    max_request_bytes: int = 16 * 1024 * 1024
    debug: bool = False
    home: Path = field(default_factory=lambda: Path.home() / ".olla")
    origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    ui: bool = True

    @property
    def keys_file(self) -> Path:
        return self.home / "keys.json"

    def describe(self) -> dict[str, str]:
        """Settings as display strings, for `olla serve` start-up logs."""
        out = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        out["keep_alive"] = format_duration(self.keep_alive)
        for name in ("request_timeout", "queue_timeout"):
            seconds = getattr(self, name)
            out[name] = format_duration(seconds) if seconds > 0 else "none"
        out["num_threads"] = str(self.num_threads or "auto")
        out["kv_cache_type"] = self.kv_cache_type or "auto"
        out["context_length"] = str(self.context_length or "auto")
        for name in ("flash_attention", "kv_unified"):
            value = getattr(self, name)
            out[name] = "auto" if value is None else str(value).lower()
        return out


def config_file_path(environ: Mapping[str, str]) -> Path:
    """`OLLA_CONFIG`, else `$XDG_CONFIG_HOME/olla/config.yaml`, else `~/.config/olla/...`."""
    if environ.get("OLLA_CONFIG"):
        return Path(os.path.expanduser(environ["OLLA_CONFIG"]))
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "olla" / "config.yaml"


def _read_yaml(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} (from OLLA_CONFIG) does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    known = {spec.name for spec in SETTINGS}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from defaults, the YAML file, `OLLA_*` variables and `flags` (None = unset)."""
    env = os.environ if environ is None else environ
    path = config_file_path(env)
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (str(path), _read_yaml(path, explicit=bool(env.get("OLLA_CONFIG")))),
        ("environment", {s.name: env[s.env] for s in SETTINGS if env.get(s.env, "") != ""}),
        ("flag", {k: v for k, v in (flags or {}).items() if v is not None}),
    ]
    values: dict[str, Any] = {}
    for source, layer in layers:
        for spec in SETTINGS:
            if spec.name not in layer:
                continue
            label = spec.env if source == "environment" else f"{source} {spec.name}"
            try:
                values[spec.name] = spec.parse(layer[spec.name])
            except ValueError as exc:
                raise ConfigError(f"{label}={layer[spec.name]!r}: {exc}") from None
    return replace(Settings(), **values)
