"""Settings layering: defaults → YAML → OLLA_* → flags, and every bad value named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.address import HostAddress
from olla.config import Settings, load_settings
from olla.errors import ConfigError


def env_with(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), **values}


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(environ=env_with(tmp_path))
    assert s == Settings()
    assert str(s.host) == "127.0.0.1:11435"
    assert s.models == Path.home() / ".olla" / "models"
    assert s.keep_alive == 300.0


def test_layers_override_in_order(tmp_path: Path) -> None:
    config = tmp_path / "olla.yaml"
    config.write_text("num_parallel: 2\nmax_queue: 7\nkeep_alive: 10m\ncontext_length: 1024\n")
    env = env_with(tmp_path, OLLA_CONFIG=str(config), OLLA_NUM_PARALLEL="3", OLLA_MAX_QUEUE="9")
    s = load_settings({"max_queue": "11", "num_parallel": None}, environ=env)
    assert s.num_parallel == 3  # env beats YAML; a None flag is "not given"
    assert s.max_queue == 11  # flag beats env
    assert s.keep_alive == 600.0  # YAML beats default
    assert s.context_length == 1024


def test_xdg_config_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "xdg" / "olla").mkdir(parents=True)
    (tmp_path / "xdg" / "olla" / "config.yaml").write_text("debug: true\nhost: 0.0.0.0:9000\n")
    s = load_settings(environ=env_with(tmp_path))
    assert s.debug is True
    assert s.host.port == 9000 and s.host.connect_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"OLLA_NUM_PARALLEL": "abc"}, "OLLA_NUM_PARALLEL='abc': expected an integer"),
        ({"OLLA_NUM_PARALLEL": "0"}, "must be at least 1"),
        ({"OLLA_KEEP_ALIVE": "5 minutes"}, "OLLA_KEEP_ALIVE"),
        ({"OLLA_DEBUG": "maybe"}, "expected true or false"),
        ({"OLLA_HOST": "https://x:1"}, "only http://"),
        ({"OLLA_HOST": "127.0.0.1:99999"}, "port must be a number from 1 to 65535"),
        ({"OLLA_HOST": "bad host!:5"}, "not a host name"),
        ({"OLLA_MAX_REQUEST_BYTES": "lots"}, "invalid size"),
        ({"OLLA_CONFIG": "/nonexistent/olla.yaml"}, "does not exist"),
    ],
)
def test_bad_values_name_their_source(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(environ=env_with(tmp_path, **env))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("num_paralel: 2\n", "unknown setting(s) num_paralel"),
        ("- a\n- b\n", "must be a mapping"),
        ("host: [\n", "not valid YAML"),
        ("max_queue: many\n", "max_queue"),
    ],
)
def test_bad_yaml(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env_with(tmp_path, OLLA_CONFIG=str(config)))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "host", "port", "base_url"),
    [
        ("127.0.0.1:5000", "127.0.0.1", 5000, "http://127.0.0.1:5000"),
        ("http://localhost:8080/", "localhost", 8080, "http://localhost:8080"),
        ("example.lan", "example.lan", 11435, "http://example.lan:11435"),
        (":6000", "127.0.0.1", 6000, "http://127.0.0.1:6000"),
        ("[::1]:7000", "::1", 7000, "http://[::1]:7000"),
        ("0.0.0.0", "0.0.0.0", 11435, "http://127.0.0.1:11435"),
    ],
)
def test_host_forms(text: str, host: str, port: int, base_url: str) -> None:
    parsed = HostAddress.parse(text)
    assert (parsed.host, parsed.port, parsed.base_url) == (host, port, base_url)
    assert not parsed.is_unix


def test_unix_host() -> None:
    for text in ("unix:/run/olla.sock", "unix:///run/olla.sock"):
        parsed = HostAddress.parse(text)
        assert parsed.is_unix and parsed.socket_path == "/run/olla.sock"
        assert str(parsed) == "unix:/run/olla.sock"
    with pytest.raises(ValueError, match="unix:/path"):
        HostAddress.parse("unix:")


def test_docs_list_every_setting() -> None:
    """docs/configuration.md and `olla serve --help` come from the same SETTINGS table."""
    from olla.config import SETTINGS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for spec in SETTINGS:
        flag = "--" + spec.name.replace("_", "-")
        row = f"| {spec.name} | `{spec.env}` | `{flag}` | `{spec.default_text}` |"
        assert row in docs, spec.name


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", None), ("AUTO", None), ("0", None), ("2048", 2048), ("262144", 262144)],
)
def test_context_length_is_auto_unless_set(tmp_path: Path, value: str, expected: int) -> None:
    assert load_settings(environ=env_with(tmp_path)).context_length is None  # unset: auto
    s = load_settings(environ=env_with(tmp_path, OLLA_CONTEXT_LENGTH=value))
    assert s.context_length == expected
    assert s.describe()["context_length"] == str(expected or "auto")


def test_a_context_length_below_256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OLLA_CONTEXT_LENGTH='100': must be at least 256"):
        load_settings(environ=env_with(tmp_path, OLLA_CONTEXT_LENGTH="100"))
