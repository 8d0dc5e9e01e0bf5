"""A Modelfile's ADAPTER applied by a real daemon on the real SmolLM2 GGUF.

The adapter is scripts/synthetic_lora's: random low-rank weights made for SmolLM2's shapes. It
tests the mechanics (created, checked, shown, loaded in its own model's runner, applied), not
what an adapter teaches a model: greedy output moves away from the base model's, that is all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.backends.test_llama_lora import synthetic_lora
from tests.conftest import Daemon
from tests.daemon_helpers import api, create_tiny, olla
from tests.registry.test_adapter_check import write as write_adapter
from tests.server.test_api_routes import call, upload

GREEDY = {"temperature": 0, "seed": 7, "num_predict": 16}
PROMPT = "Why is the sky blue?"


async def generate(daemon: Daemon, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "options": GREEDY, "stream": False}
    answer: dict[str, Any] = await api(daemon, "POST", "/api/generate", body)
    return str(answer["response"])


async def test_an_adapter_changes_greedy_output_of_its_model_only(
    daemon: Daemon, smollm2_gguf: Path, tmp_path: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    synthetic_lora(tmp_path / "lora.gguf")
    (tmp_path / "Modelfile").write_text("FROM tiny\nADAPTER ./lora.gguf\n")
    created = await olla(daemon, "create", "adapted", "-f", str(tmp_path / "Modelfile"))
    assert created.exit_code == 0, created.stderr

    shown = await api(daemon, "POST", "/api/show", {"model": "adapted"})
    [line] = [x for x in shown["modelfile"].splitlines() if x.startswith("ADAPTER ")]
    assert Path(line.removeprefix("ADAPTER ")).parent == daemon.models / "blobs"
    plain = await api(daemon, "POST", "/api/show", {"model": "tiny"})
    assert "ADAPTER" not in plain["modelfile"]

    base = await generate(daemon, "tiny")
    adapted = await generate(daemon, "adapted")
    again = await generate(daemon, "tiny")  # the same GGUF, without the adapter
    assert base and adapted and adapted != base
    assert again == base
    ps = await api(daemon, "GET", "/api/ps")
    assert sorted(m["name"] for m in ps["models"]) == ["adapted:latest", "tiny:latest"]


async def test_an_adapter_for_another_model_is_a_400_at_create(
    daemon: Daemon, smollm2_gguf: Path, tmp_path: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    # a LoRA for a llama of 256-wide embeddings (SmolLM2's are 576)
    other = {"blk.0.attn_q.weight.lora_a": (8, 256), "blk.0.attn_q.weight.lora_b": (256, 8)}
    digest = await upload(daemon, write_adapter(tmp_path / "other.gguf", other).read_bytes())
    body = {"model": "x", "from": "tiny", "adapters": {"other.gguf": digest}, "stream": False}
    status, answer = await call(daemon, "POST", "/api/create", body)
    assert status == 400
    assert answer["error"].startswith(
        "adapter other.gguf does not fit the base model: blk.0.attn_q.weight is [576, 576] "
        "there, and the adapter's pair is lora_a [256, 8], lora_b [8, 256]"
    )
    tags = await api(daemon, "GET", "/api/tags")
    assert [m["name"] for m in tags["models"]] == ["tiny:latest"]


async def test_an_adapter_that_fails_to_load_is_a_clear_500(
    daemon: Daemon, smollm2_gguf: Path, tmp_path: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    digest = await upload(daemon, write_adapter(tmp_path / "empty.gguf", {}).read_bytes())
    body = {"model": "x", "from": "tiny", "adapters": {"empty.gguf": digest}, "stream": False}
    assert (await call(daemon, "POST", "/api/create", body))[0] == 200
    # the store edited behind olla's back: the blob is now an adapter for another architecture
    blob = daemon.models / "blobs" / digest.replace(":", "-")
    blob.chmod(0o644)
    write_adapter(blob, {}, arch="qwen2")
    body = {"model": "x", "prompt": PROMPT, "options": GREEDY, "stream": False}
    status, answer = await call(daemon, "POST", "/api/generate", body)
    assert status == 500  # the store is at fault, not the request
    assert answer["error"].startswith("model runner for x:latest exited with status 1 while")
    assert answer["error"].endswith(
        f"LoRA adapter {blob.name} could not be loaded: failed to apply lora adapter: "
        "model arch and LoRA arch mismatch"
    )
    assert "Traceback" not in answer["error"] and "Traceback" not in daemon.log()
    assert await generate(daemon, "tiny")  # the base model still answers
