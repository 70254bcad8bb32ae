"""The end-to-end benchmark harness still runs and accounts for every message (a tiny load:
the figures themselves are measured by hand, never asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_e2e_throughput_harness_runs_and_delivers_everything(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/e2e_throughput.py", "--messages", "150", "--clients", "5",
                          "--repeat", "2", "--store-parent", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert len(re.findall(r"ratio gateway/straight: \d+\.\d\dx", text)) == 2
    assert text.count("delivered to sink: 150/150") == 2  # every acknowledged message reached the sink
    assert re.search(r"ratio over 2 rounds: median \d+\.\d\dx", text)
    assert "straight run: clients" in text
