"""Issue 4: a large spreadsheet must not take more than ~10x its size in memory to extract and scan.

Measured in a fresh child (tests/fixtures/memory_probe.py): peak resident set size (VmHWM) growth
over the baseline taken after imports, scanner compilation and reading the file. The workbook is a
resident register as Excel writes it with nearly every name, kana, address and phone number distinct
(the worst realistic case: the shared-string table is about as long as the sheet). 100,000 rows make
an 8.8 MB file, over the size where calamine hands over to the streaming reader; before the compact
rows it peaked at ~13.5x, now ~7x. benchmarks/extract_throughput.py --memory-rows 280000 measures a
25 MB one (~6.6x).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "fixtures" / "memory_probe.py"

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (VmHWM)")


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(PROBE), str(path), str(ROOT)], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.slow
def test_large_register_extracts_and_scans_within_ten_times_its_size(tmp_path: Path) -> None:
    rows = 100_000
    path = tmp_path / "住民名簿.xlsx"
    path.write_bytes(fx.register_xlsx(rows))
    m = probe(path)
    size = int(m["file_bytes"])  # type: ignore[call-overload]
    peak = int(m["peak_growth"])  # type: ignore[call-overload]
    assert size > 8_000_000
    assert m["rows"] == rows + 1 and m["records"] == rows
    detectors = {f[0]: f for f in m["findings"]}  # type: ignore[attr-defined]
    assert detectors["personal_records"][1] == rows and detectors["my_number"][2] == "high"
    assert peak <= 10 * size, f"extract+scan peaked at {peak / size:.1f}x the file ({peak / 1e6:.0f} MB)"
