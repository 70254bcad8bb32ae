"""`dlpgate scan` body (offline_scan.run): JSON shape, verdicts against header recipients, exit codes."""

from __future__ import annotations

import io
import json
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
