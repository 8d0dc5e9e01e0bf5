"""A model with a vision projector through a real daemon: `olla create` from two FROM lines,
`/api/show` and `olla show` with the projector, `olla show --modelfile` rebuilding it, `olla rm`
leaving no blob behind. (Loading it is the runner's part; here the store is under test.)"""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner

from olla.cli import cli
from tests.conftest import Daemon
from tests.tiny_projector import EMBEDDING, PROJECTION, write_projector


def olla(*args: str) -> str:
    out = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.output


def test_create_show_rebuild_and_remove_a_model_with_a_projector(
    daemon: Daemon, smollm2_gguf: Path, tmp_path: Path
) -> None:
    projector = write_projector(tmp_path / "mmproj-SmolVLM-256M-F16.gguf")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {projector}\nFROM {smollm2_gguf}\nSYSTEM Describe images.\n")
    olla("create", "seer", "-f", str(modelfile))

    show = httpx.post(f"{daemon.base_url}/api/show", json={"model": "seer"}).json()
    assert show["capabilities"][:2] == ["completion", "vision"]  # vision next, as Ollama orders
    info = show["projector_info"]
    assert (info["general.architecture"], info["clip.vision.projection_dim"]) == ("clip", 576)
    text = olla("show", "seer")
    section = text[text.index("  Projector") :].split("\n\n")[0].splitlines()
    assert [line.split() for line in section] == [
        ["Projector"],
        ["architecture", "clip"],
        ["parameters", "32"],
        ["embedding", "length", str(EMBEDDING)],
        ["dimensions", str(PROJECTION)],
    ]
    tags = httpx.get(f"{daemon.base_url}/api/tags").json()["models"]
    assert "vision" in tags[0]["capabilities"]

    # the generated Modelfile names both blobs; creating from it gives the same layers
    rebuilt = tmp_path / "Rebuilt"
    rebuilt.write_text(olla("show", "seer", "--modelfile"))
    olla("create", "again", "-f", str(rebuilt))
    again = httpx.post(f"{daemon.base_url}/api/show", json={"model": "again"}).json()
    assert again["projector_info"] == info

    blobs = daemon.models / "blobs"
    olla("rm", "seer", "again")
    assert list(blobs.iterdir()) == []
