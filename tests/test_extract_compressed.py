"""bzip2 and xz attachments (`.csv.bz2`, `.tar.xz`): read like gzip, bombs stop at the budget, damage is
`corrupt`, and a text that merely starts with "BZh" is still text. And the names of attachments and of
the files inside them are scanned."""

from __future__ import annotations

import bz2
import io
import lzma
import sys
import tarfile
from pathlib import Path

import pytest

from dlpgate.extract import extract_file
from dlpgate.extract.model import ExtractLimits
from dlpgate.scan.checks import my_number_check_digit
from dlpgate.scan.scanner import Scanner

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from legacy_formats import tar_bytes  # noqa: E402

ROSTER = "氏名,住所,生年月日,個人番号\n" + "".join(
    f"試験 太郎{i},東京都千代田区{i}-1,1980/01/{i + 1:02d},{b}{my_number_check_digit(b)}\n"
    for i, b in enumerate(f"1234567{i:04d}" for i in range(6)))


@pytest.mark.parametrize(("name", "data", "inner"), [
    ("roster.csv.bz2", bz2.compress(ROSTER.encode()), "roster.csv.bz2/roster.csv"),
    ("roster.csv.xz", lzma.compress(ROSTER.encode()), "roster.csv.xz/roster.csv"),
    ("dump.tar.xz", lzma.compress(tar_bytes({"d/roster.csv": ROSTER.encode()})), "dump.tar.xz/dump.tar/d/roster.csv"),
    ("dump.tbz2", bz2.compress(tar_bytes({"roster.csv": ROSTER.encode()})), "dump.tbz2/dump.tar/roster.csv"),
    # two streams, as pbzip2 and `cat a.xz b.xz` write them
    ("two.csv.bz2", bz2.compress(ROSTER[:40].encode()) + bz2.compress(ROSTER[40:].encode()), "two.csv.bz2/two.csv"),
])
def test_compressed_roster_is_read_and_held(name: str, data: bytes, inner: str) -> None:
    ex = extract_file(name, data)
    parts = [p for p in ex.parts if p.tables or p.text]
    assert [p.path for p in parts] == [inner], [(p.path, p.kind, p.unscannable) for p in ex.parts]
    assert not any(p.unscannable for p in ex.parts)
    result = Scanner.load().scan_extraction(ex)
    my = [f for f in result.findings if f.detector == "my_number"]
    assert my and my[0].count == 6 and my[0].severity == "high"
    assert result.records == 6


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress])
def test_bomb_stops_at_the_budget(compress) -> None:  # type: ignore[no-untyped-def]
    bomb = compress(b"\0" * 20_000_000)
    assert len(bomb) < 100_000
    ex = extract_file("bomb.bin", bomb, ExtractLimits(max_total_bytes=1_000_000))
    assert [p.unscannable for p in ex.parts] == ["limit"]


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress])
def test_damaged_and_truncated_are_corrupt(compress) -> None:  # type: ignore[no-untyped-def]
    good = compress(ROSTER.encode() * 50)
    truncated = good[: len(good) // 2]
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for data in (truncated, bytes(flipped)):
        ex = extract_file("a.csv.bz2", data)
        assert [p.unscannable for p in ex.parts] == ["corrupt"], [(p.path, p.unscannable) for p in ex.parts]


def test_text_starting_with_bzh_is_text() -> None:
    ex = extract_file("note.txt", "BZh is how the memo begins, 氏名 not here".encode())
    assert [(p.kind, p.unscannable) for p in ex.parts] == [("text", None)]


def test_attachment_and_member_names_are_scanned() -> None:
    """A file named after a person's identifier leaks it whatever its content: the names of every
    attachment and of every member inside one are scanned as a `filenames` part."""
    from email.message import EmailMessage

    from dlpgate.extract import extract_message
    from dlpgate.scan.checks import mask

    n = "12345678901" + str(my_number_check_digit("12345678901"))
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@city.example.jp", "b@gmail.com", "書類"
    msg.set_content("添付します")
    msg.add_attachment(b"hello", maintype="application", subtype="octet-stream", filename=f"山田_マイナンバー_{n}.txt")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(f"提出/個人番号{n[:4]}-{n[4:8]}-{n[8:]}.csv")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    msg.add_attachment(bz2.compress(buf.getvalue()), maintype="application", subtype="x-bzip2", filename="docs.tar.bz2")
    msg.add_attachment(b"plain", maintype="text", subtype="plain", filename="議事録.txt")
    ex = extract_message(bytes(msg))
    (names,) = [p for p in ex.parts if p.path == "filenames"]
    assert f"山田_マイナンバー_{n}.txt" in names.text and "議事録.txt" in names.text
    result = Scanner.load().scan_extraction(ex)
    (finding,) = [f for f in result.findings if f.part == "filenames"]
    assert finding.detector == "my_number" and finding.count == 2 and finding.sample == mask(n)


def test_ordinary_names_give_no_finding() -> None:
    from email.message import EmailMessage

    from dlpgate.extract import extract_message

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@city.example.jp", "b@vendor.example.com", "見積"
    msg.set_content("見積書を送ります")
    msg.add_attachment(b"%PDF-1.4\n", maintype="application", subtype="pdf", filename="見積書_202412011030.pdf")
    result = Scanner.load().scan_extraction(extract_message(bytes(msg)))
    assert not [f for f in result.findings if f.part == "filenames"]
