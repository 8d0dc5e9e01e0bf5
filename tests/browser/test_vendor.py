"""The vendored libraries are what VENDOR.json records (scripts/vendor_ui --check), each with
its licence: a hand edit, or a refresh left half done, fails here."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_vendored_files_match_their_recorded_checksums() -> None:
    script = runpy.run_path(str(REPO / "scripts" / "vendor_ui"))
    assert script["check"]() == 0


def test_every_vendored_package_is_recorded_with_its_licence() -> None:
    script = runpy.run_path(str(REPO / "scripts" / "vendor_ui"))
    for package in script["PACKAGES"]:
        assert "LICENSE" in package.files.values(), package.name
        assert (script["VENDOR"] / package.directory / "LICENSE").is_file()
