"""The walls between the packages and between hub's rooms hold (the contracts are in
pyproject.toml under [tool.importlinter]; docs/architecture.md says why each wall is there).

import-linter reads the source, not the running interpreter, so an import made inside a
function or under TYPE_CHECKING counts too, and so does a forbidden module reached through a
third one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "channels", "bots", "crm_store", "prompts")
LINT = (
    "from importlinter.cli import lint_imports; "
    "raise SystemExit(lint_imports(no_cache=True, no_logo=True))"
)


def lint(project: Path) -> subprocess.CompletedProcess[str]:
    # In a process of its own: import-linter puts the working directory first on sys.path,
    # which is how it finds the copy below rather than the installed project.
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=project, capture_output=True, text=True, timeout=120
    )


def test_every_wall_holds() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.fixture
def copy_of_the_project(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", "static", "templates", "*.json"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "wall"),
    [
        ("channels/telegram.py", "from crm_store import models", "Channels see only the contract"),
        ("channels/webchat.py", "from hub.web import auth", "Channels see only the contract"),
        ("crm_store/clients.py", "from hub import messages", "The store does no network I/O"),
        ("crm_store/slots.py", "import redis", "The store does no network I/O"),
        ("bots/tools.py", "from hub.pipeline import replies", "The bots answer through"),
        ("hub/pipeline/router.py", "from hub.web import roles", "The pipeline runs without"),
        # Reaching the web through a third module breaks the wall as well.
        ("hub/pipeline/router.py", "from hub import state", "The pipeline runs without"),
        ("hub/jobs/scheduler.py", "from hub.web import app", "The jobs send through"),
        ("hub/config.py", "from hub.pipeline import bus", "The top modules every room sees"),
        ("hub/web/roles.py", "from hub.cli import common", "The web serves the running hub"),
        ("hub/pipeline/bus.py", "from hub.pipeline import router", "No circle between"),
        # The wiring joins the rooms; a room reaching back into it makes a circle of rooms.
        ("hub/state.py", "from hub.web import app", "No circle between"),
        ("hub/forwarded.py", "from hub.web import auth", "The top modules every room sees"),
    ],
)
def test_a_forbidden_import_breaks_its_wall(
    copy_of_the_project: Path, module: str, line: str, wall: str
) -> None:
    target = copy_of_the_project / module
    # Inside a function, where a hurried fix would hide it from a reader.
    target.write_text(
        target.read_text(encoding="utf-8") + f"\n\ndef _sneaky() -> None:\n    {line}\n",
        encoding="utf-8",
    )
    result = lint(copy_of_the_project)
    assert result.returncode == 1, result.stdout + result.stderr
    _, _, broken = result.stdout.partition("Broken contracts")
    assert wall in broken, result.stdout
