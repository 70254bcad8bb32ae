"""Outlook .pst through `dlpgate archive` (libpff): a PST written per [MS-PST] by
tests/pst_fixture.py, a damaged one, and resume inside a PST."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402
from pst_fixture import Mail, write_pst  # noqa: E402
from test_archive import SPACED, VALID, _interrupt_after, archive  # noqa: E402

pytest.importorskip("pypff", reason="libpff-python is a dependency on x86_64 Linux (pyproject.toml)")

RECEIVED_HEADERS = ("Received: from mx.example.com by city.example.jp\r\nFrom: Partner <p@partner.example.com>\r\n"
                    "To: staff@city.example.jp\r\nSubject: =?UTF-8?B?6KaL56mN?=\r\nDate: Tue, 05 Mar 2024 10:00:00 +0900\r\n"
                    "Message-ID: <quote-1@partner.example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")


def mails() -> list[Mail]:
    rows = [fx.HEADER, *fx.resident_rows(12)]
    return [
        Mail("名簿送付", "添付のとおりです。", "tanaka@city.example.jp", ["vendor@vendor.example.com"],
             attachments=[("名簿.csv", fx.csv_bytes(rows))], when=datetime(2023, 6, 1, 2, 0, tzinfo=UTC)),
        Mail("私用", f"個人番号 {SPACED}", "suzuki@city.example.jp", ["colleague@city.example.jp"],
             bcc=["me@gmail.com"], when=datetime(2023, 7, 2, 3, 0, tzinfo=UTC)),
        Mail("見積", "ご確認ください", "sato@city.example.jp", ["staff@city.example.jp"],
             transport_headers=RECEIVED_HEADERS),
        Mail("会議", "来週の会議について", "sato@city.example.jp", ["a@city.example.jp"],
             when=datetime(2024, 2, 3, 4, 0, tzinfo=UTC)),
    ]


def test_pst_messages_judged_like_mail(tmp_path: Path) -> None:
    path = tmp_path / "archive.pst"
    path.write_bytes(write_pst(mails()))
    code, records, _ = archive([str(path)], internal_domains=("city.example.jp",))
    assert code == 1
    assert [r["location"] for r in records] == [f"{path}#Sent Items/{i}" for i in range(1, 5)]
    first, second, third, fourth = records
    assert first["verdict"] == "hold" and first["records"] == 12 and first["date"] == "2023-06-01T02:00:00+00:00"
    assert first["sender"] == "tanaka@city.example.jp" and first["subject"] == "名簿送付"
    assert any(f["part"] == "名簿.csv" for f in first["findings"])
    # the Bcc from the recipient table makes this personal mail
    assert second["recipient_domains"] == ["city.example.jp", "gmail.com"] and second["verdict"] == "hold"
    assert second["findings"][0]["sample"] == "6214********"
    # received mail: its transport headers are the message's own
    assert third["sender"] == "p@partner.example.com" and third["message_id"] == "<quote-1@partner.example.com>"
    assert third["subject"] == "見積" and third["date"] == "2024-03-05T10:00:00+09:00" and third["verdict"] == "clean"
    assert fourth["verdict"] == "clean"
    assert VALID not in str(records)


def test_damaged_pst_block_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    data = bytearray(write_pst(mails()))
    at = bytes(data).find("来週の会議について".encode("utf-16-le"))  # the fourth message's body, in its block
    assert at > 0
    start = at - at % 64
    while not (data[start + 2] == 0xEC and data[start + 3] == 0xBC):  # that block's heap header
        start -= 64
    data[start + 2] = 0x00  # the heap signature gone: libpff cannot read the item (it does not check CRCs)
    path = tmp_path / "damaged.pst"
    path.write_bytes(bytes(data))
    code, records, _ = archive([str(path)], report_dir=str(tmp_path / "r"))
    assert [r["verdict"] for r in records[:3]] == ["hold", "hold", "clean"]
    assert records[3]["verdict"] == "unreadable" and "damaged PST item" in records[3]["error"]
    assert "total,unreadable,1," in (tmp_path / "r" / "summary.csv").read_text(encoding="utf-8")
    assert code == 1

    not_pst = tmp_path / "truncated.pst"
    not_pst.write_bytes(bytes(data[:3000]))
    code, records, _ = archive([str(not_pst)])
    assert [r["verdict"] for r in records] == ["unreadable"] and "unreadable PST" in records[0]["error"]


def test_resume_inside_a_pst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    many = [Mail(f"件名{i}", f"個人番号 {SPACED}" if i % 3 == 0 else f"本文{i}", "a@city.example.jp",
                 ["b@gmail.com"]) for i in range(30)]
    path = tmp_path / "many.pst"
    path.write_bytes(write_pst(many))
    code, full, _ = archive([str(path)], report_dir=str(tmp_path / "full"))
    assert code == 1 and len(full) == 30
    with monkeypatch.context() as m:
        _interrupt_after(m, 11)
        code, first, _ = archive([str(path)], report_dir=str(tmp_path / "part"))
    assert code == 130 and 0 < len(first) < 30
    code, rest, _ = archive([str(path)], report_dir=str(tmp_path / "part"), resume=True)
    assert first + rest == full
    for name in ("results.jsonl", "report.html", "summary.csv"):
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
