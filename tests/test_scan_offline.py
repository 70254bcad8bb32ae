"""`dlpgate scan` body (offline_scan.run): JSON shape, verdicts against header recipients, exit codes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from dlpgate.offline_scan import run

VALID = "621498320257"


def eml(tmp_path: Path, name: str, to: str, body: str, cc: str = "", bcc: str = "") -> str:
    headers = f"From: sender@city.example.jp\nTo: {to}\n" + (f"Cc: {cc}\n" if cc else "") + (f"Bcc: {bcc}\n" if bcc else "")
    raw = headers + "Subject: =?UTF-8?B?5ZCN57C/?=\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body + "\n"
    p = tmp_path / name
    p.write_bytes(raw.encode("utf-8"))
    return str(p)


def scan(paths: list[str], **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(paths, as_json=kw.pop("as_json", True), rules_dir=None, out=out, err=err, **kw)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


def test_json_shape_and_exit_codes(tmp_path: Path) -> None:
    held = eml(tmp_path, "a.eml", "x@vendor.example.com", f"個人番号 {VALID[:4]}-{VALID[4:8]}-{VALID[8:]}")
    clean = tmp_path / "b.txt"
    clean.write_text("本日の会議資料です。", encoding="utf-8")
    code, out, _ = scan([held, str(clean)])
    assert code == 1
    first, second = (json.loads(line) for line in out.splitlines())
    assert first == {
        "path": held,
        "verdict": "hold",
        "findings": [{"rule": "my_number", "detector": "my_number", "count": 1, "severity": "high", "part": "body",
                      "sample": "6214********"}],
        "records": 0,
    }
    assert second == {"path": str(clean), "verdict": "clean", "findings": [], "records": 0}
    assert VALID not in out
    assert scan([str(clean)]) [0] == 0


def test_eml_judged_against_header_recipients(tmp_path: Path) -> None:
    body = f"照会 {VALID[:4]} {VALID[4:8]} {VALID[8:]}"  # medium
    internal = eml(tmp_path, "i.eml", "a@city.example.jp", body)
    bcc_personal = eml(tmp_path, "p.eml", "a@city.example.jp", body, bcc="me@gmail.com")
    code, out, _ = scan([internal, bcc_personal], internal_domains=["city.example.jp"])
    verdicts = [json.loads(line)["verdict"] for line in out.splitlines()]
    assert verdicts == ["clean", "hold"] and code == 1  # a finding still exits 1


def test_other_files_as_if_external(tmp_path: Path) -> None:
    csv = tmp_path / "名簿.csv"
    csv.write_text("氏名,住所,生年月日\n" + "\n".join(f"試験{i},架空市,1990/01/01" for i in range(12)) + "\n", encoding="utf-8")
    code, out, _ = scan([str(csv)])
    record = json.loads(out)
    assert code == 1 and record["verdict"] == "hold" and record["records"] == 12
    assert record["findings"][0]["detector"] == "personal_records"


def test_missing_file_is_exit_2_but_others_still_reported(tmp_path: Path) -> None:
    ok = tmp_path / "c.txt"
    ok.write_text("こんにちは", encoding="utf-8")
    code, out, err = scan([str(tmp_path / "missing.eml"), str(ok)])
    assert code == 2 and "missing.eml" in err and json.loads(out)["verdict"] == "clean"


def test_bad_rules_dir_is_exit_2(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run([str(tmp_path)], as_json=True, rules_dir=str(tmp_path / "nope"), out=out, err=err) == 2
    assert "detectors.toml" in err.getvalue()


def test_explain_and_human_output(tmp_path: Path) -> None:
    to = ", ".join(f"r{i}@d{i % 4}.example.net" for i in range(15))
    path = eml(tmp_path, "exposed.eml", to, "ご案内です。")
    code, out, _ = scan([path], as_json=False, explain=True)
    assert "hold" in out and "FIRED exposed_recipients [hold]" in out and "Bcc" in out
    assert "r3@d3.example.net" not in out  # never echo other recipients
    assert code == 1


# ------------------------------------------------------------- messages recognised by their content
def _message(to: str, body: str, n: int = 1) -> str:
    return (f"From: staff@city.example.jp\nTo: {to}\nSubject: m{n}\nDate: Mon, 01 Jan 2024 09:00:00 +0900\n"
            f"Message-ID: <m{n}@city.example.jp>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}\n")


def test_mbox_gives_one_result_per_message_judged_on_its_own_recipients(tmp_path: Path) -> None:
    body = f"照会 {VALID[:4]} {VALID[4:8]} {VALID[8:]}"  # medium: held only when it leaves the city
    messages = [_message("a@city.example.jp", body, 1), _message("me@gmail.com", "こんにちは", 2),
                _message("me@gmail.com", body + "\n>From here on, quoted", 3)]
    path = tmp_path / "sent"  # no suffix: an mbox by its first line
    path.write_bytes("".join(f"From staff@city.example.jp Mon Jan  1 09:00:0{i} 2024\n{m}\n"
                             for i, m in enumerate(messages)).encode())
    code, out, _ = scan([str(path)], internal_domains=["city.example.jp"])
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["verdict"] for r in records] == ["clean", "clean", "hold"] and code == 1
    assert all(r["path"].startswith(f"{path}@") for r in records)
    assert records[0]["path"] == f"{path}@0"
    # the whole mbox judged as one message would hold it once, against the first To only
    assert len({r["path"] for r in records}) == 3


def test_damaged_mbox_block_is_reported_unreadable_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "a.mbox"
    path.write_bytes(b"garbage before any From_ line\n\nFrom x@y Mon Jan  1 09:00:00 2024\n"
                     + _message("a@city.example.jp", "clean").encode())
    code, out, _ = scan([str(path)], as_json=False, internal_domains=["city.example.jp"])
    lines = out.splitlines()
    assert lines[0] == f"{path}@0: unreadable: damaged block: bytes that are not a message (no From_ line)"
    assert lines[1].endswith(": clean (records: 0)") and code == 1


def test_text_beginning_with_from_is_not_an_mbox(tmp_path: Path) -> None:
    path = tmp_path / "memo.txt"
    path.write_text(f"From the desk of the director\n個人番号 {VALID}\n", encoding="utf-8")
    code, out, _ = scan([str(path)])
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["path"] == str(path) and record["verdict"] == "hold" and code == 1


def test_outlook_msg_is_judged_as_a_message_on_its_recipients(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from msg_fixture import write_msg

    body = f"照会 {VALID[:4]} {VALID[4:8]} {VALID[8:]}"
    paths = []
    for name, to in (("internal.msg", "a@city.example.jp"), ("out.msg", "me@gmail.com")):
        p = tmp_path / name
        p.write_bytes(write_msg(subject="照会", body=body, sender="t@city.example.jp", to=[to], cc=[], bcc=[],
                                html=None, attachments=[], embedded=[], when=None, message_id="<x@y>"))
        paths.append(str(p))
    damaged = tmp_path / "damaged.msg"
    damaged.write_bytes(Path(paths[0]).read_bytes()[:3000])
    code, out, _ = scan([*paths, str(damaged)], internal_domains=["city.example.jp"])
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["path"], r["verdict"]) for r in records] == [
        (paths[0], "clean"), (paths[1], "hold"), (str(damaged), "unreadable")]
    assert records[1]["findings"][0]["part"] == "body"  # the message's body, not the .msg as an attachment
    assert code == 1 and VALID not in out
