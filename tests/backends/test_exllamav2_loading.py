"""The parts of loading an exllamav2 model that run without a GPU: the end tokens, the runner's
choice of backend, and what a machine without exllamav2 says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from olla.backends.choice import check_exllamav2
from olla.backends.exllamav2_model import stop_tokens
from olla.errors import ModelLoadError, NotSupported
from olla.runner.build import build
from olla.runner.native_order import backend_of
from olla.runtime.runner_client import _visible_device
from olla.wire.spec import RunnerSpec
from tests.model_dirs import write_model_dir

NO_EXLLAMAV2 = importlib.util.find_spec("exllamav2") is None


def test_stop_tokens_gather_every_end_of_generation_id(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7, "x"]}))
    assert stop_tokens(directory, SimpleNamespace(eos_token_id=9)) == [2, 7, 9]
    assert stop_tokens(tmp_path, SimpleNamespace(eos_token_id=None)) == []


def test_the_runner_reads_its_backend_from_the_spec_before_loading_anything() -> None:
    spec = RunnerSpec(model_path="/m", socket_path="/s", backend="exllamav2")
    assert backend_of(["runner", spec.to_json()]) == "exllamav2"
    assert backend_of(["runner", RunnerSpec("/m", "/s").to_json()]) == "llama_cpp"
    assert backend_of(["pytest"]) == backend_of(["x", "not json"]) == "llama_cpp"


@pytest.mark.skipif(not NO_EXLLAMAV2, reason="exllamav2 is installed here")
def test_without_exllamav2_the_daemon_says_what_to_install_and_the_runner_fails_clearly(
    tmp_path: Path,
) -> None:
    with pytest.raises(NotSupported) as info:
        check_exllamav2("m:latest", "exl2")
    assert info.value.status == 501 and "pip install 'olla[exl2]'" in info.value.message
    spec = RunnerSpec(str(write_model_dir(tmp_path / "m")), "/s", backend="exllamav2")
    with pytest.raises(ModelLoadError) as loading:
        build(spec)
    assert "olla[exl2]" in loading.value.message


def test_an_exllamav2_runner_sees_the_gpu_it_was_placed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _visible_device(1) == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6")
    assert (_visible_device(0), _visible_device(1)) == ("4", "6")
