"""fold() on attacker-shaped cells: a header cell of digits then a letter must not backtrack
exponentially (it was `(?:[-_.#:]?[0-9]+)+$`: 24 digits took ~3 s, 29 (max_header_cell 30)
about two minutes per cell, in every line of a body table candidate: a mail could stall a worker)."""

from __future__ import annotations

import re
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from dlpgate.scan.normalize import _NUMBERING

# The pattern as it was: same language, but ambiguous (a digit run splits into blocks many ways).
_OLD_NUMBERING = re.compile(r"(?:[-_.#:]?[0-9]+)+$")


@given(st.text(alphabet="0123-_.#:a住所 ", max_size=12))
def test_numbering_cut_matches_the_old_pattern(text: str) -> None:
    assert _NUMBERING.sub("", text) == _OLD_NUMBERING.sub("", text)


def test_long_digit_cell_folds_promptly() -> None:
    # In a child with a generous bound: the old pattern would run for minutes here, not fail.
    code = (
        "from dlpgate.scan.normalize import fold\n"
        "from dlpgate.scan.scanner import Scanner\n"
        "cell = '1' * 29 + 'x'\n"
        "assert fold(cell) == cell, fold(cell)\n"
        "assert fold('住所' + '1' * 28) == '住所'\n"
        "s = Scanner.load(engine='re')\n"
        "line = '氏名\\t住所\\t電話\\t' + cell\n"
        "r = s.scan('b', '\\n'.join([line] * 3))\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
