"""Compact table rows (model.Rows): the same rows, and the same findings, as a tuple of tuples."""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import Table, extract_file  # noqa: E402
from dlpgate.extract.model import Rows, RowsBuilder  # noqa: E402
from dlpgate.scan.scanner import Scanner  # noqa: E402

MY_NUMBER = "123456789018"  # synthetic, valid check digit

AWKWARD: list[tuple[str, ...]] = [
    ("タイトル",),
    ("氏名", "住所", "生年月日", "個人番号"),
    ("佐藤 太郎", "例市\n例町1-2", "1980-01-01", MY_NUMBER),  # a line break inside a cell (Alt+Enter)
    ("鈴木\t花子", "例市", "1990-02-03", "1234 5678 9018"),  # a tab inside a cell
    ("", "", " "),  # whitespace only: not a record
    ("\u3000",),  # an ideographic space only: not a record either
    ("高橋",),
    ("", "", "", "", "", "備考だけ"),  # longer than the header
    (),  # a row with no cell at all
]


def build(rows: list[tuple[str, ...]], block: int = RowsBuilder.BLOCK) -> tuple[str, Rows]:
    b = RowsBuilder()
    b.BLOCK = block  # type: ignore[misc] - small blocks exercise the block joins
    for r in rows:
        b.add(list(r))
    return b.build()


@pytest.mark.parametrize("block", [1, 2, 512])
def test_rows_read_back_exactly_and_text_is_the_plain_join(block: int) -> None:
    text, rows = build(AWKWARD, block)
    assert text == "\n".join("\t".join(r) for r in AWKWARD)
    assert rows.text is text  # one copy: the part's text is the table's storage
    assert len(rows) == len(AWKWARD)
    assert list(rows) == AWKWARD
    assert [rows[i] for i in range(len(AWKWARD))] == AWKWARD
    assert rows[-1] == () and rows[-3] == ("高橋",)
    assert rows[1:4] == tuple(AWKWARD[1:4]) and rows[::3] == tuple(AWKWARD[::3])
    assert rows == tuple(AWKWARD) and rows == AWKWARD and hash(rows) == hash(tuple(AWKWARD))
    with pytest.raises(IndexError):
        rows[len(AWKWARD)]
    for i in range(6):
        for first in range(len(AWKWARD) + 1):
            assert rows.column(i, first) == [r[i] for r in AWKWARD[first:] if len(r) > i]
    for header in range(-1, len(AWKWARD) + 1):
        assert rows.records_after(header) == sum(bool("".join(r).strip()) for r in AWKWARD[header + 1:])
    assert pickle.loads(pickle.dumps(rows)) == rows
    assert MY_NUMBER not in repr(rows)  # a repr never shows the cells


def test_empty_builder() -> None:
    text, rows = build([])
    assert text == "" and len(rows) == 0 and list(rows) == [] and rows.records_after(0) == 0


def random_rows(rng: random.Random, n: int) -> list[tuple[str, ...]]:
    cells = ["", " ", "氏名", "住所", "生年月日", "個人番号", MY_NUMBER, "1234-5678-9018", "a\tb", "x\ny", "\t",
             "電話番号", "03-1234-5678", "佐藤", "例市1-2-3", "\u3000"]
    return [tuple(rng.choice(cells) for _ in range(rng.randint(0, 7))) for _ in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_random_tables_read_back(seed: int) -> None:
    rng = random.Random(seed)
    original = random_rows(rng, rng.randint(0, 60))
    text, rows = build(original, rng.choice([1, 3, 512]))
    assert list(rows) == original and text == "\n".join("\t".join(r) for r in original)
    i, first = rng.randint(0, 7), rng.randint(0, 10)
    assert rows.column(i, first) == [r[i] for r in original[first:] if len(r) > i]
    header = rng.randint(-1, 10)
    assert rows.records_after(header) == sum(bool("".join(r).strip()) for r in original[header + 1:])


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner.load()


@pytest.mark.parametrize("seed", range(20))
def test_scanner_finds_the_same_in_rows_and_in_tuples(scanner: Scanner, seed: int) -> None:
    rng = random.Random(seed)
    original = [*random_rows(rng, 3), ("氏名", "住所", "生年月日", "個人番号"), *random_rows(rng, rng.randint(0, 80))]
    text, rows = build(original, rng.choice([1, 7, 512]))
    compact = scanner.scan("t.xlsx/S", text, (Table("t.xlsx/S", rows),))
    plain = scanner.scan("t.xlsx/S", text, (Table("t.xlsx/S", tuple(original)),))
    assert compact == plain


def test_sheets_and_csv_come_out_as_rows_with_the_same_findings(scanner: Scanner) -> None:
    table = [fx.HEADER, *fx.resident_rows(300)]
    for name, data in (("名簿.xlsx", fx.xlsx_bytes({"名簿": table})), ("名簿.csv", fx.csv_bytes(table))):
        (part,) = extract_file(name, data).parts
        rows = part.tables[0].rows
        assert isinstance(rows, Rows) and rows.text is part.text
        assert len(rows) == 301 and rows[0] == fx.HEADER
        compact = scanner.scan(part.path, part.text, part.tables)
        plain = scanner.scan(part.path, part.text, (Table(part.path, tuple(rows)),))
        assert compact == plain
        assert compact.records == 300


@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
def test_csv_read_in_pieces_as_one_stream(monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    """Quoted fields spanning lines, \r\n, \r and \n endings, cut anywhere: the same rows as csv on the whole text."""
    import csv
    import io

    from dlpgate.extract import delimited

    text = ('氏名,住所,個人番号\r\n"佐藤\r\n太郎","例市\n例町",' + MY_NUMBER + '\n鈴木,"a,b",1\r高橋,"""引用""",2\r\n'
            + "\n".join(f"{i},x,{i}" for i in range(40)))
    want = [tuple(c.strip() for c in r) for r in csv.reader(io.StringIO(text, newline="")) if r]
    monkeypatch.setattr(delimited, "PIECE", piece)
    (part,) = extract_file("a.csv", text.encode("utf-8")).parts
    assert list(part.tables[0].rows) == want
