"""`dlpgate archive`: readers (mbox quoting, no final newline, damaged blocks, Maildir, MH, trees,
.msg), judging against header recipients, JSON lines, --since/--until, exit codes, resume."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402
from msg_fixture import compress_rtf_literal, write_msg  # noqa: E402

from dlpgate.archive import Options, run  # noqa: E402
from dlpgate.archive.readers import load, open_archive, read_mbox, unquote_mbox  # noqa: E402
from dlpgate.extract import extract_message  # noqa: E402

VALID = "621498320257"
SPACED = f"{VALID[:4]} {VALID[4:8]} {VALID[8:]}"


def message(n: int, body: str, to: str = "someone@gmail.com", date: str = "Mon, 01 Jan 2024 09:00:00 +0900",
            sender: str = "staff@city.example.jp", extra: str = "") -> str:
    return (f"From: {sender}\nTo: {to}\nSubject: message {n}\nDate: {date}\nMessage-ID: <m{n}@city.example.jp>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n{extra}\n{body}")


def mbox(messages: list[str], final_newline: bool = True) -> bytes:
    blocks = [f"From staff@city.example.jp Mon Jan  1 09:00:{i % 60:02d} 2024\n" + m.rstrip("\n") + "\n"
              for i, m in enumerate(messages)]
    text = "\n".join(blocks) + "\n"
    if not final_newline:
        text = text.rstrip("\n")
    return text.encode("utf-8")


def archive(paths: list[str], **kw: object) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    kw.setdefault("as_json", True)
    kw.setdefault("tty", False)
    code = run(paths, Options(**kw), out=out, err=err)  # type: ignore[arg-type]
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")], err.getvalue()


# ------------------------------------------------------------------------------ mbox
def test_mbox_quoting_and_missing_final_newline(tmp_path: Path) -> None:
    bodies = [
        "first\n>From the quoted line\n>>From twice quoted\nFrom inside a paragraph, not a separator\n",
        "second\n",
        f"個人番号 {SPACED}",  # the last message, its identifier at the very end, no newline after it
    ]
    path = tmp_path / "sent.mbox"
    path.write_bytes(mbox([message(i, b) for i, b in enumerate(bodies)], final_newline=False))
    items = list(read_mbox(str(path)))
    assert len(items) == 3
    first = load(items[0].source)  # type: ignore[arg-type]
    assert b"\nFrom the quoted line\n>From twice quoted\nFrom inside a paragraph" in first
    assert not first.startswith(b"From ") and first.startswith(b"From: staff")
    assert first.endswith(b"not a separator\n")  # the separating empty line belongs to the format
    assert load(items[2].source).endswith(SPACED.encode())  # type: ignore[arg-type]

    code, records, err = archive([str(path)], internal_domains=("city.example.jp",))
    assert code == 1
    assert [r["location"] for r in records] == [f"{path}@{it.position - it.size}" for it in items]
    assert [r["verdict"] for r in records] == ["clean", "clean", "hold"]
    last = records[2]
    assert last["message_id"] == "<m2@city.example.jp>" and last["date"] == "2024-01-01T09:00:00+09:00"
    assert last["findings"][0]["detector"] == "my_number" and last["findings"][0]["sample"] == "6214********"
    assert last["recipient_domains"] == ["gmail.com"] and last["records"] == 0
    assert VALID not in json.dumps(records) and VALID not in err


def test_mbox_read_in_small_pieces_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Separators that straddle two reads, and a message larger than a read, change nothing."""
    from dlpgate.archive import readers

    msgs = [message(i, ("x" * (i * 37 % 300)) + "\n" + ">From q\n" * (i % 3)) for i in range(60)]
    msgs.append(message(99, "big\n" + "y" * 5000))
    path = tmp_path / "m.mbox"
    path.write_bytes(mbox(msgs))
    whole = [(i.location, load(i.source)) for i in read_mbox(str(path))]  # type: ignore[arg-type]
    for size in (7, 64, 333):
        monkeypatch.setattr(readers, "MBOX_READ", size)
        assert [(i.location, load(i.source)) for i in read_mbox(str(path))] == whole  # type: ignore[arg-type]
    assert len(whole) == 61
    # resuming at any message start gives the rest
    third = list(read_mbox(str(path)))[2]
    rest = list(read_mbox(str(path), third.position))
    assert [i.location for i in rest] == [loc for loc, _ in whole[3:]]


def test_unquote_mboxrd() -> None:
    assert unquote_mbox(b"a\n>From x\n>>From y\n> From z\n") == b"a\nFrom x\n>From y\n> From z\n"


def test_damaged_mbox_is_reported_and_skipped(tmp_path: Path) -> None:
    good = [message(i, f"本文 {i}" + (f" 個人番号 {SPACED}" if i == 3 else "")) for i in range(5)]
    raw = mbox(good)
    garbage = b"\x00\x17\x93 not mail at all \xff\xfe\n" * 20
    headless = b"From x@y Mon Jan  1 00:00:00 2024\n\x00\x01\x02\x03 binary \x00\xff\n\n"
    path = tmp_path / "damaged.mbox"
    cut = raw.index(b"From staff", 10)  # after the first message
    path.write_bytes(garbage + raw[:cut] + headless + raw[cut:])
    code, records, err = archive([str(path)], report_dir=str(tmp_path / "r"))
    verdicts = [r["verdict"] for r in records]
    assert verdicts.count("unreadable") == 2
    assert records[0]["verdict"] == "unreadable" and "no From_ line" in records[0]["error"]
    assert sum(1 for r in records if r["verdict"] != "unreadable") == 5  # every good message still judged
    assert code == 1 and any(r["findings"] for r in records)
    summary = (tmp_path / "r" / "summary.csv").read_text(encoding="utf-8")
    assert "total,unreadable,2," in summary
    assert "could not be read" in err or "2 unreadable" in err


# ------------------------------------------------------------------------------ folders
def test_maildir_new_and_cur_mh_and_tree(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "cur" / "1700000001.M1.host:2,S").write_text(message(1, f"個人番号 {SPACED}"), encoding="utf-8")
    (md / "cur" / "1700000000.M0.host:2,S").write_text(message(0, "先の件"), encoding="utf-8")
    (md / "new" / "1700000002.M2.host").write_text(message(2, "会議の件"), encoding="utf-8")
    (md / "tmp" / "1700000003.M3.host").write_text(message(3, f"個人番号 {SPACED}"), encoding="utf-8")
    sent = md / ".Sent"
    for sub in ("cur", "new", "tmp"):
        (sent / sub).mkdir(parents=True)
    (sent / "cur" / "1700000004.M4.host:2,S").write_text(message(4, "送信済み"), encoding="utf-8")
    assert open_archive(str(md)).kind == "maildir"
    code, records, _ = archive([str(md)])
    locations = [r["location"] for r in records]
    # tmp/ is mail still being delivered; a location is masked like any text but for its offset
    assert locations == ["Maildir/cur/1700******.M0.host:2,S", "Maildir/cur/1700******.M1.host:2,S",
                         "Maildir/new/1700******.M2.host", "Maildir/.Sent/cur/1700******.M4.host:2,S"]
    assert [r["verdict"] for r in records] == ["clean", "hold", "clean", "clean"] and code == 1

    mh = tmp_path / "inbox"
    mh.mkdir()
    (mh / ".mh_sequences").write_text("unseen: 2\n")
    for n in (10, 2, 1):
        (mh / str(n)).write_text(message(n, f"mh {n}"), encoding="utf-8")
    assert open_archive(str(mh)).kind == "mh"
    _, records, _ = archive([str(mh)])
    assert [r["location"] for r in records] == ["inbox/1", "inbox/2", "inbox/10"]

    tree = tmp_path / "export"
    (tree / "2019").mkdir(parents=True)
    (tree / "2019" / "a.eml").write_text(message(1, "a"), encoding="utf-8")
    (tree / "2019" / "notes.txt").write_text("not mail", encoding="utf-8")
    (tree / "old.mbox").write_bytes(mbox([message(5, "x"), message(6, f"個人番号 {SPACED}")]))
    (tree / "z.msg").write_bytes(write_msg(subject="s", body="msg body", sender="a@city.example.jp", to=["b@gmail.com"]))
    code, records, _ = archive([str(tree)])
    # a folder's own files first (sorted), then its sub-folders; files that are not mail are passed over
    assert [r["location"].split("@")[0] for r in records] == ["export/old.mbox", "export/old.mbox", "export/z.msg",
                                                             "export/2019/a.eml"]
    assert [r["verdict"] for r in records] == ["clean", "hold", "clean", "clean"]


# ------------------------------------------------------------------------------ .msg
def test_msg_file_recipients_attachments_and_embedded(tmp_path: Path) -> None:
    rows = [fx.HEADER, *fx.resident_rows(30)]
    data = write_msg(
        subject="名簿の送付", body="お世話になっております。\n添付をご確認ください。", sender="tanaka@city.example.jp",
        to=["vendor@vendor.example.com"], cc=["me@gmail.com"], bcc=["audit@city.example.jp"],
        html="<p>添付をご確認ください</p>", attachments=[("名簿.csv", fx.csv_bytes(rows))],
        embedded=[{"filename": "転送.msg", "subject": "転送", "body": f"個人番号 {SPACED}", "sender": "x@city.example.jp",
                   "to": ["y@vendor.example.com"]}],
        when=datetime(2023, 4, 5, 6, 7, 8, tzinfo=UTC), message_id="<abc@city.example.jp>")
    path = tmp_path / "送付.msg"
    path.write_bytes(data)
    code, records, _ = archive([str(path)], internal_domains=("city.example.jp",))
    (r,) = records
    assert code == 1 and r["verdict"] == "hold"
    assert r["date"] == "2023-04-05T06:07:08+00:00" and r["message_id"] == "<abc@city.example.jp>"
    assert r["recipient_domains"] == ["city.example.jp", "gmail.com", "vendor.example.com"]
    assert r["sender"] == "tanaka@city.example.jp" and r["subject"] == "名簿の送付"
    parts = {f["part"] for f in r["findings"]}
    assert any(p.startswith("名簿.csv") for p in parts)  # the register attached to the .msg
    assert any(p.startswith("転送.msg.eml/") or p.startswith("転送") for p in parts)  # the embedded message
    assert r["records"] >= 30


def test_msg_rtf_only_body(tmp_path: Path) -> None:
    rtf = b"{\\rtf1\\ansi\\ansicpg932{\\fonttbl{\\f0 MS Gothic;}}\\f0 \\'8c\\'c2\\'90\\'6c\\'94\\'d4\\'8d\\'86 " + SPACED.encode() + b"\\par}"
    path = tmp_path / "rtf.msg"
    path.write_bytes(write_msg(subject="rtf", body="", sender="a@city.example.jp", to=["b@vendor.example.com"],
                               rtf=compress_rtf_literal(rtf)))
    _, (r,), _ = archive([str(path)])
    assert [f["detector"] for f in r["findings"]] == ["my_number"] and r["findings"][0]["severity"] == "high"


def test_msg_attached_to_mail_is_read_and_damaged_msg_fails_closed(tmp_path: Path) -> None:
    inner = write_msg(subject="inner", body=f"個人番号 {SPACED}", sender="a@city.example.jp", to=["b@example.com"])
    ex = extract_message(fx.email_bytes("転送します", attachments=[("old.msg", inner)]))
    by_path = {p.path: p for p in ex.parts}
    assert VALID[:4] in by_path["old.msg/body"].text.replace(" ", "")
    assert by_path["old.msg/subject"].text == "inner"
    # a .msg carrying a workbook by value is still read as the message (the .xls marker is inside it)
    xls = write_msg(subject="xls", body="b", sender="a@city.example.jp", to=["b@example.com"],
                    attachments=[("old.xls", fx.xls_bytes({"s": [fx.HEADER, *fx.resident_rows(3)]}))])
    ex = extract_message(fx.email_bytes("転送します", attachments=[("x.msg", xls)]))
    assert {"x.msg/subject", "x.msg/body"} <= {p.path for p in ex.parts}
    assert any(p.path.startswith("x.msg/old.xls") and p.text for p in ex.parts)
    broken = inner[:-512] + b"\x41" * 512  # the FAT (the last sector) overwritten
    ex = extract_message(fx.email_bytes("転送します", attachments=[("old.msg", broken)]))
    (part,) = [p for p in ex.parts if p.path.startswith("old.msg")]
    assert part.unscannable == "corrupt"
    path = tmp_path / "broken.msg"
    path.write_bytes(broken)
    code, (r,), _ = archive([str(path)])
    assert r["verdict"] == "unreadable" and r["error"] and code == 0


# ------------------------------------------------------------------------------ options, errors
def test_since_until_and_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "m.mbox"
    dates = ["Tue, 15 Jan 2019 10:00:00 +0900", "Sat, 15 Jun 2021 10:00:00 +0900", "Wed, 15 Mar 2023 10:00:00 +0900"]
    path.write_bytes(mbox([message(i, f"個人番号 {SPACED}" if i == 0 else "clean", date=d) for i, d in enumerate(dates)]))
    code, records, _ = archive([str(path)], since=datetime(2020, 1, 1, tzinfo=UTC))
    assert [r["message_id"] for r in records] == ["<m1@city.example.jp>", "<m2@city.example.jp>"] and code == 0
    code, records, _ = archive([str(path)], until=datetime(2020, 1, 1, tzinfo=UTC))
    assert [r["message_id"] for r in records] == ["<m0@city.example.jp>"] and code == 1


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dlpgate.cli import main

    assert main(["archive", str(tmp_path / "missing.mbox")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    (tmp_path / "x.txt").write_text("just some notes\n")
    assert main(["archive", str(tmp_path / "x.txt")]) == 2
    assert "not a mail archive" in capsys.readouterr().err
    (tmp_path / "a.mbox").write_bytes(mbox([message(1, "a")]))
    assert main(["archive", str(tmp_path / "a.mbox"), "--resume"]) == 2
    assert "--report" in capsys.readouterr().err
    assert main(["archive", str(tmp_path / "a.mbox"), "--since", "last tuesday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["archive", str(tmp_path / "a.mbox"), "--report", str(tmp_path / "r"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["archive", str(tmp_path / "a.mbox"), "--report", str(tmp_path / "r")]) == 0
    (tmp_path / "b.mbox").write_bytes(mbox([message(1, "b")]))
    assert main(["archive", str(tmp_path / "b.mbox"), "--report", str(tmp_path / "r"), "--resume"]) == 2
    assert "other archives" in capsys.readouterr().err


# ------------------------------------------------------------------------------ resume
def _corpus(tmp_path: Path) -> list[str]:
    a = tmp_path / "a.mbox"
    a.write_bytes(mbox([message(i, f"個人番号 {SPACED}" if i % 7 == 0 else f"本文 {i}",
                               date=f"Mon, {1 + i % 28:02d} {['Jan', 'Feb', 'Mar'][i % 3]} 2024 09:00:00 +0900",
                               to="x@gmail.com" if i % 2 else "y@vendor.example.com") for i in range(150)]))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(40):
        (tree / "sub" / f"{i:03d}.eml").write_text(message(1000 + i, f"個人番号 {SPACED}" if i % 5 == 0 else "x"),
                                                  encoding="utf-8")
    (tree / "inner.mbox").write_bytes(mbox([message(2000 + i, f"本文 {i}") for i in range(90)]))
    return [str(a), str(tree)]


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """A real SIGINT to this process once `n` results are in (the run's own handler takes it)."""
    from dlpgate.archive import progress

    seen = {"n": 0}
    original = progress.Progress.update

    def update(self, nbytes, result):  # type: ignore[no-untyped-def]
        seen["n"] += 1
        if seen["n"] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, nbytes, result)

    monkeypatch.setattr(progress.Progress, "update", update)


@pytest.mark.parametrize(("jobs", "stop_at"), [(1, 37), (1, 200), (2, 60), (2, 230)])
def test_resume_gives_the_uninterrupted_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int,
                                               stop_at: int) -> None:
    paths = _corpus(tmp_path)
    full = tmp_path / "full"
    code_full, records_full, _ = archive(paths, report_dir=str(full), jobs=jobs)
    assert code_full == 1 and len(records_full) == 280

    part = tmp_path / "part"
    with monkeypatch.context() as m:
        _interrupt_after(m, stop_at)
        code, first, err = archive(paths, report_dir=str(part), jobs=jobs)
    assert code == 130 and "interrupted" in err
    assert 0 < len(first) < 280
    code, rest, _ = archive(paths, report_dir=str(part), jobs=jobs, resume=True)
    assert code == 1
    assert first + rest == records_full  # nothing judged twice, nothing lost, same order
    for name in ("results.jsonl", "report.html", "flagged.csv", "summary.csv"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name


def test_report_never_shows_an_identifier(tmp_path: Path) -> None:
    paths = _corpus(tmp_path)
    extra = tmp_path / "subj.mbox"
    extra.write_bytes(mbox([message(1, "x", extra=f"X-Note: {VALID}\n").replace("Subject: message 1",
                                                                            f"Subject: 番号{VALID}の件")]))
    named = tmp_path / "named"
    named.mkdir()
    (named / f"番号{VALID}.eml").write_text(message(7, f"個人番号 {SPACED}"), encoding="utf-8")
    code, records, _ = archive([*paths, str(named), str(extra)], report_dir=str(tmp_path / "r"))
    assert code == 1 and records[-2]["location"] == "named/番号6214********.eml"
    for f in (tmp_path / "r").iterdir():
        assert VALID not in f.read_text(encoding="utf-8"), f.name
    assert records[-1]["subject"] == "番号6214********の件"


def test_blank_lines_before_the_first_message_are_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "blank.mbox"
    path.write_bytes(b"\n\n" + mbox([message(1, "a"), message(2, "b")]))
    code, records, _ = archive([str(path)])
    assert [r["verdict"] for r in records] == ["clean", "clean"] and code == 0


def test_month_axis_has_no_gaps() -> None:
    from collections import Counter

    from dlpgate.archive.report import month_series

    assert month_series(Counter({"2023-11": 2, "2024-02": 1, "unknown": 3})) == [
        ("2023-11", 2), ("2023-12", 0), ("2024-01", 0), ("2024-02", 1), ("unknown", 3)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_message_that_kills_its_worker_costs_only_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           jobs: int) -> None:
    """A reader crash (a C parser's segfault on a hostile attachment) ends a worker process, not
    the run: the batch is judged again message by message, the culprit is reported unreadable."""
    from dlpgate.archive import judge

    original = judge.judge_raw

    def deadly(location: str, raw: bytes, size: int) -> dict:
        if b"CRASH-ME" in raw:
            os._exit(139)
        return original(location, raw, size)

    monkeypatch.setattr(judge, "judge_raw", deadly)  # forked workers inherit it
    path = tmp_path / "m.mbox"
    path.write_bytes(mbox([message(i, "CRASH-ME" if i == 4 else (f"個人番号 {SPACED}" if i == 7 else "x"))
                           for i in range(10)]))
    code, records, _ = archive([str(path)], jobs=jobs)
    assert len(records) == 10 and code == 1
    assert records[4]["verdict"] == "unreadable" and "crashed" in records[4]["error"]
    assert [r["verdict"] for i, r in enumerate(records) if i != 4] == ["clean"] * 6 + ["hold"] + ["clean"] * 2


def test_internal_domains_option_before_or_after_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dlpgate.cli import main

    path = tmp_path / "m.mbox"
    path.write_bytes(mbox([message(1, f"照会 {SPACED}", to="a@city.example.jp")]))  # medium: held only outside
    assert main(["archive", "--internal-domains", "city.example.jp,town.example.jp", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "clean"  # a finding (exit 1), internal: not held
    assert main(["archive", str(path), "--json", "--internal-domains", "town.example.jp"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "hold"


def test_sender_text_is_shown_not_obeyed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A subject with terminal escapes or a bidi override must not rewrite the auditor's screen or
    turn the report's table around."""
    from dlpgate.cli import main

    path = tmp_path / "m.mbox"
    raw = message(1, f"個人番号 {SPACED}").replace("Subject: message 1", "Subject: =?UTF-8?B?"
                                                + __import__("base64").b64encode("請求\x1b[2K\u202eTXT.EXE".encode()).decode() + "?=")
    path.write_bytes(mbox([raw]))
    for extra in ([], ["--json"]):
        assert main(["archive", str(path), "--report", str(tmp_path / "r"), *extra]) == 1
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\u202e" not in out
    records = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "\u202e" in records[0]["subject"]  # kept as data in the results file (JSON-escaped on screen)
    for name in ("report.html", "flagged.csv"):
        text = (tmp_path / "r" / name).read_text(encoding="utf-8")
        assert "\x1b" not in text and "\u202e" not in text and "\\u202e" in text, name


@pytest.mark.parametrize("peak", [1, 2, 3, 5, 10, 997])
def test_month_chart_gridlines_are_distinct_whole_counts(peak: int) -> None:
    """Counts of mail on the y axis: whole numbers, none repeated, the top at or above the peak."""
    import re as _re

    from dlpgate.archive.report import _bar_chart_vertical

    svg = _bar_chart_vertical([("2024-01", peak), ("2024-02", max(0, peak // 2))], "flagged per month")
    labels = [int(x) for x in _re.findall(r'fill="#616e7c">(\d+)</text>', svg)]
    assert labels == sorted(set(labels), reverse=True) and labels[-1] == 0
    assert labels[0] >= peak and len(labels) <= 5
