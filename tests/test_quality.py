"""The style bar is part of the suite: ruff clean everywhere, mypy clean on scan/ and the store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    r = run(str(BIN / "ruff"), "check", "dlpgate", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_mypy_clean_on_scan_and_store() -> None:
    r = run(sys.executable, "-m", "mypy", "dlpgate/scan", "dlpgate/store")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
