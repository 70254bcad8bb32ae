"""`dlpgate scan` of a big message file maps it instead of reading it (offline_scan._mapped): the
verdict, findings and explanation are those of the file read into bytes, for every shape of
message (single-part, transfer-encoded, multipart, CRLF, no header end) and for other files."""

from __future__ import annotations

import base64
import io
import json
import mmap
from collections.abc import Callable
from pathlib import Path

import pytest

from dlpgate import offline_scan

VALID = "621498320257"
FILLER = "お世話になっております。来週の打合せの件、資料をお送りします。TEL 03-1234-5678 注文番号 2024-123456\n"
BODY = FILLER * 9000 + f"個人番号 {VALID[:4]}-{VALID[4:8]}-{VALID[8:]}\n" + "氏名,住所,生年月日\n" + "".join(
    f"試験{i},架空市{i}丁目,1990/01/{i + 1:02d}\n" for i in range(12)) + FILLER * 2000
HEAD = "From: sender@city.example.jp\nTo: x@vendor.example.com\nSubject: big\nMIME-Version: 1.0\n"


def single(body: str) -> bytes:
    return (HEAD + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body).encode()


def base64_body(body: str) -> bytes:
    encoded = base64.encodebytes(body.encode()).decode()
    return (HEAD + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" + encoded).encode()


def multipart(body: str) -> bytes:
    return (HEAD + 'Content-Type: multipart/mixed; boundary="b0"\n\n--b0\nContent-Type: text/plain; charset=utf-8\n\n'
            + body + "\n--b0\nContent-Type: text/csv; charset=utf-8\nContent-Disposition: attachment; filename=\"a.csv\"\n\n"
            + "氏名,住所\n試験,架空市\n--b0--\n").encode()


def crlf(body: str) -> bytes:
    return single(body).replace(b"\n", b"\r\n")


def no_header_end(body: str) -> bytes:
    return (HEAD + "X-Note: " + body.replace("\n", " ")).encode()


SHAPES: dict[str, Callable[[str], bytes]] = {
    "single": single, "base64": base64_body, "multipart": multipart, "crlf": crlf, "no_header_end": no_header_end,
}


def judged(path: Path) -> tuple[int, list[dict[str, object]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = offline_scan.run([str(path)], as_json=True, rules_dir=None, out=out, err=err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_mapped_message_judged_as_read(tmp_path: Path, shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.eml"
    path.write_bytes(SHAPES[shape](BODY))
    assert path.stat().st_size >= offline_scan._MAP_MIN
    maps: list[mmap.mmap | None] = []
    real = offline_scan._mapped
    monkeypatch.setattr(offline_scan, "_mapped", lambda p: maps.append(real(p)) or maps[-1])
    mapped = judged(path)
    assert len(maps) == 1 and isinstance(maps[0], mmap.mmap)  # the mapping was judged ...
    assert maps[0].closed  # ... and closed once judged (a mapping holds a file descriptor)
    monkeypatch.setattr(offline_scan, "_mapped", lambda p: None)
    read = judged(path)
    assert mapped == read
    code, records, _ = read
    if shape == "no_header_end":  # all of it one header value: no body, nothing scanned
        assert code == 0 and records[0]["verdict"] == "clean"
    else:
        assert code == 1 and records[0]["verdict"] == "hold"
        assert {f["detector"] for f in records[0]["findings"]} >= {"my_number"}  # type: ignore[union-attr]


def test_a_big_file_that_is_no_message_is_read(tmp_path: Path) -> None:
    """A big CSV is mapped, found no message, and judged from bytes as an attachment."""
    path = tmp_path / "名簿.csv"
    path.write_text("氏名,住所,生年月日\n" + "".join(f"試験{i},架空市{i}丁目,1990/01/01\n" for i in range(60000)),
                    encoding="utf-8")
    assert path.stat().st_size >= offline_scan._MAP_MIN
    code, records, _ = judged(path)
    assert code == 1 and records[0]["verdict"] == "hold" and records[0]["records"] == 60000


def test_small_and_special_files_are_not_mapped(tmp_path: Path) -> None:
    small = tmp_path / "s.eml"
    small.write_bytes(single("本日の会議資料です。\n"))
    assert offline_scan._mapped(str(small)) is None
    assert offline_scan._mapped(str(tmp_path)) is None  # a directory: no mapping, read as before
    big = tmp_path / "b.eml"
    big.write_bytes(single(BODY))
    mapped = offline_scan._mapped(str(big))
    assert mapped is not None and mapped[:5] == b"From:"
    with pytest.raises(TypeError):
        mapped[0] = 0  # read-only
