"""The import graph has no arrow upward, and only the top floor knows the web framework.

Floors, top to bottom: ``server`` (the web server: launch, HTTP guard, Gradio
internals) over ``ui`` (the page), over ``studio`` (orchestration and who may
do what), over the domain packages (``retrieval``, ``personas``, ``explain``,
``training``), over ``chat`` (the runtime). A module may import its own
package and anything on a lower floor, never a higher one (packages on one
floor import none of each other today; that is not enforced). A new package
is one line in ``FLOORS``. Every import counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FLOORS = {
    "server": 5,
    "ui": 4,
    "studio": 3,
    "retrieval": 2,
    "personas": 2,
    "explain": 2,
    "training": 2,
    "chat": 1,
}
# The web framework and its parts: only these packages may import them.
WEB = {"gradio", "gradio_client", "starlette", "fastapi", "uvicorn"}
WEB_FLOORS = {"server", "ui"}
NOT_THE_APP = {"tests", "bench", "docs", "data"}  # main.py wires the app from above all floors


def modules() -> list[Path]:
    return sorted(p for package in FLOORS for p in (ROOT / package).rglob("*.py"))


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """The top-level names of everything the module at ``path`` imports (relative ones resolved)."""
    package = path.relative_to(root).parts[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names


def upward(path: Path, root: Path = ROOT) -> set[str]:
    """The packages on a higher floor than its own that the module at ``path`` imports."""
    floor = FLOORS[path.relative_to(root).parts[0]]
    return {name for name in imported(path, root) if FLOORS.get(name, 0) > floor}


def test_every_package_is_on_a_floor():
    """A new top-level package of the app must be given a floor here."""
    packages = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and any(p.glob("*.py"))
        and p.name not in NOT_THE_APP
    }
    assert packages == set(FLOORS)
    assert len(modules()) > 50  # the walk found the code


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_upward(path):
    package = path.relative_to(ROOT).parts[0]
    assert not upward(path), f"{package} (floor {FLOORS[package]}) imports {sorted(upward(path))}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_server_and_ui_know_the_web_framework(path):
    package = path.relative_to(ROOT).parts[0]
    if package not in WEB_FLOORS:
        assert not imported(path) & WEB, f"{path.relative_to(ROOT)} imports the web framework"


def test_an_upward_arrow_is_seen_inside_functions_too(tmp_path):
    (tmp_path / "studio").mkdir()
    (tmp_path / "ui").mkdir()
    late = tmp_path / "studio" / "late.py"
    late.write_text("import os\n\n\ndef f():\n    from ui.app import ChatUI\n")
    page = tmp_path / "ui" / "page.py"
    page.write_text(
        "from . import errors\nfrom chat.errors import ChatStudioError\nimport server.web\n"
    )
    assert imported(late, tmp_path) == {"os", "ui"}
    assert upward(late, tmp_path) == {"ui"}
    assert imported(page, tmp_path) == {"ui", "chat", "server"}
    assert upward(page, tmp_path) == {"server"}
