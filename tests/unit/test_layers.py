"""The house plan holds: layers only look down, features do not import one another, and no
package imports its siblings in a cycle (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    beside = Path(sys.executable).parent / "lint-imports"  # the venv running the tests
    lint_imports = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert lint_imports, "import-linter is not installed (pip install -e '.[dev]')"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
