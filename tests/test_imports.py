"""olla's packages import in one direction: each only from those below it (docs/architecture.md).

Read from the source, so a new cycle or an upward import fails here, not in a review. The daemon
never imports the runner's side (the engine, the backends, the runner): that code, and numpy
with it, loads only in a runner process; of the backends it may read `backends.choice`, which
names them without importing them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

OLLA = Path(__file__).resolve().parent.parent / "olla"

# lowest first: a package may import from itself and from the packages before it
ORDER = (
    "errors",
    "address",
    "units",
    "memory",
    "logs",
    "asyncutil",
    "chat",
    "images",
    "config",
    "gotemplate",
    "templates",
    "quantize",
    "tool_calls",
    "thinking",
    "progress",
    "registry",
    "api",
    "engine",
    "backends",
    "wire",
    "stream",
    "runner",
    "runtime",
    "server",
    "ui",  # data, not Python: the web page that server/ui_page.py serves
    "testing",
    "client",
    "show_text",
    "cli_keys",
    "wordwrap",
    "answer",
    "run_options",
    "run_stats",
    "image_paths",
    "prompt_images",
    "repl_input",
    "repl",
    "run_model",
    "cli_run",
    "cli",
    "__main__",
)
RUNNER_SIDE = {"engine", "backends", "runner"}
DAEMON_SIDE = {
    "runtime",
    "server",
    "client",
    "wordwrap",
    "answer",
    "run_options",
    "run_stats",
    "image_paths",
    "prompt_images",
    "repl_input",
    "repl",
    "run_model",
    "cli_run",
    "cli",
    "api",
    "registry",
    "stream",
    "wire",
}
DAEMON_MAY_USE = {"olla.backends.choice"}  # names the backends without importing them


def _imports() -> Iterator[tuple[str, str, str]]:
    """(importing module, its package, imported olla module) for every import in olla/."""
    for path in sorted(OLLA.rglob("*.py")):
        module = ".".join(("olla", *path.relative_to(OLLA).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        package = (module.split(".") + [""])[1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("olla."):
                    yield module, package, name


def _package(module: str) -> str:
    return module.split(".")[1]


def test_every_package_has_a_place_in_the_order() -> None:
    packages = {p.stem if p.is_file() else p.name for p in OLLA.iterdir()}
    packages = {p for p in packages if not p.startswith(("_", ".")) or p == "__main__"}
    unplaced = sorted(packages - set(ORDER) - {"__init__", "py.typed"})
    assert not unplaced, f"place {unplaced} in ORDER (and in docs/architecture.md)"


def test_packages_import_only_from_below() -> None:
    upward = [
        f"{module} imports {name}"
        for module, package, name in _imports()
        if _package(name) != package and ORDER.index(_package(name)) > ORDER.index(package)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_daemon_never_imports_the_runners_side() -> None:
    crossing = [
        f"{module} imports {name}"
        for module, package, name in _imports()
        if package in DAEMON_SIDE
        and _package(name) in RUNNER_SIDE
        and not any(name == ok or name.startswith(ok + ".") for ok in DAEMON_MAY_USE)
    ]
    assert not crossing, "the daemon imports runner code:\n" + "\n".join(crossing)
