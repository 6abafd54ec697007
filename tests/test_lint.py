"""The linter configured in pyproject.toml passes on the package and its tests (ruff: pyflakes,
pycodestyle errors and warnings, lines up to 120 columns)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: it is in requirements.txt (make setup installs it)"
    run = subprocess.run([ruff, "check", "--no-cache", "amodal3d_ros", "tests", "setup.py"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
