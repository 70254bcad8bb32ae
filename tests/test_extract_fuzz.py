"""Property tests: truncated and bit-flipped attachments and random MIME never raise, every part is
either text or `unscannable` with a known reason, and each run finishes within its budget.

Bounded to a few seconds here; a longer campaign runs the same properties with more examples:
`DLPGATE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_extract_fuzz.py`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import legacy_formats as lf  # noqa: E402
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import (  # noqa: E402  # noqa: E402
    CORRUPT,
    ENCRYPTED,
    LIMIT,
    UNSUPPORTED,
    Extraction,
    ExtractLimits,
    extract_file,
    extract_message,
)

EXAMPLES = int(os.environ.get("DLPGATE_FUZZ_EXAMPLES", "0")) or None
REASONS = {CORRUPT, ENCRYPTED, LIMIT, UNSUPPORTED}
BUDGET = ExtractLimits(part_seconds=2.0)


@functools.cache
def seeds() -> tuple[tuple[str, bytes], ...]:
    rows = [fx.HEADER, *fx.resident_rows(8)]
    return (
        ("a.xlsx", fx.xlsx_bytes({"名簿": rows})),
        ("a.docx", fx.docx_bytes(["本文"], [("氏名", "番号"), ("佐藤", "123456789018")])),
        ("a.pptx", fx.pptx_bytes(["スライド"], notes="メモ")),
        ("a.pdf", fx.pdf_bytes([["個人番号 123456789018"]])),
        ("a.csv", fx.csv_bytes(rows)),
        ("a.zip", fx.zip_bytes({"名簿.csv": fx.csv_bytes(rows), "b.zip": fx.zip_bytes({"c.txt": b"x"})},
                               cp932_names=True)),
        ("a.eml", fx.email_bytes("本文", attachments=[("a.csv", fx.csv_bytes(rows))])),
        ("winmail.dat", lf.tnef_bytes("本文", [("a.csv", fx.csv_bytes(rows))])),
        ("a.doc", lf.doc_bytes(["本文"], [("氏名", "番号"), ("佐藤", "123456789018")])),
        ("a.csv.gz", __import__("gzip").compress(fx.csv_bytes(rows), mtime=0)),
        ("a.7z", lf.sevenzip_bytes({"a.csv": fx.csv_bytes(rows)})),
        ("a.tar.gz", lf.tar_gz_bytes({"d/a.csv": fx.csv_bytes(rows)})),
        ("a.csv.bz2", __import__("bz2").compress(fx.csv_bytes(rows))),
        ("a.tar.xz", __import__("lzma").compress(lf.tar_bytes({"d/a.csv": fx.csv_bytes(rows)}))),
    )


def assert_well_formed(ex: Extraction, elapsed: float) -> None:
    assert ex.parts
    for part in ex.parts:
        assert part.unscannable is None or part.unscannable in REASONS
        assert isinstance(part.text, str) and isinstance(part.detail, str)
        for table in part.tables:
            assert all(isinstance(cell, str) for row in table.rows for cell in row)
    assert elapsed < BUDGET.part_seconds * 3 + 2


SEED_COUNT = 14  # every format of seeds(): a test below checks the count, so a new format is fuzzed too


def test_every_seed_format_is_fuzzed() -> None:
    assert len(seeds()) == SEED_COUNT


@settings(max_examples=EXAMPLES or 120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, SEED_COUNT - 1), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                                                       max_size=8))
def test_damaged_attachments(which: int, cut: float, flips: list[tuple[float, int]]) -> None:
    name, data = seeds()[which]
    buf = bytearray(data[: max(1, int(len(data) * (0.5 + cut / 2)))] if cut < 0.5 else data)
    for where, xor in flips:
        buf[int(where * (len(buf) - 1))] ^= xor
    start = time.monotonic()
    ex = extract_file(name, bytes(buf), BUDGET)
    assert_well_formed(ex, time.monotonic() - start)


HEADER_NAMES = st.sampled_from(["Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Subject", "To"])
HEADER_VALUES = st.sampled_from([
    "multipart/mixed; boundary=B", "multipart/alternative; boundary=C", "text/plain; charset=iso-2022-jp",
    "text/html; charset=shift_jis", "message/rfc822", "application/octet-stream", "base64", "quoted-printable",
    "attachment; filename*=ISO-2022-JP''%1B%24B", "=?ISO-2022-JP?B?GyRCJTUbKEI=?=", "=?UTF-8?Q?=E3=81?=", "a@b",
    "text/plain; charset=x-unknown", "attachment; filename=\"=?UTF-8?B?5ZCN57C/Lnhsc3g=?=\"",
])
CHUNKS = st.one_of(
    st.builds(lambda n, v: f"{n}: {v}\r\n".encode(), HEADER_NAMES, HEADER_VALUES),
    st.sampled_from([b"\r\n", b"--B\r\n", b"--B--\r\n", b"--C\r\n", b"--C--\r\n", b"=\r\n", b"\x1b$B", b"\x1b(B"]),
    st.binary(max_size=40),
)


@settings(max_examples=EXAMPLES or 200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHUNKS, max_size=40))
def test_random_mime(chunks: list[bytes]) -> None:
    start = time.monotonic()
    ex = extract_message(b"".join(chunks), BUDGET)
    assert_well_formed(ex, time.monotonic() - start)
    assert isinstance(ex.subject, str) and all(isinstance(a, str) for a in ex.header_to)


def test_workbook_whose_rels_name_nothing_is_corrupt_not_empty() -> None:
    """Found by the fuzz test: a flipped bit in a member name left no sheet and no finding at all."""
    name, data = seeds()[0]
    buf = bytearray(data)
    at = bytes(buf).rfind(b"xl/_rels/workbook.xml.rels")
    assert at > 0
    buf[at + 13] ^= 1  # "workbook" -> "workbnok" in the central directory
    ex = extract_file(name, bytes(buf), BUDGET)
    assert [(p.unscannable, p.path) for p in ex.parts] == [("corrupt", "a.xlsx")]
