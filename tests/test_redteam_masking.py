"""Red team, "never leak": identifiers written the ways a copy from a web page, Word, a PDF or a
folded header writes them, and the ways someone hiding them would. Masking must hide every one
of them in what the gateway says (logs, CLI, JSON, notices, the web console).

`leaks` here is stricter than test_leakproof_masking's: whatever sits between two digits that is
not a letter or a digit does not break the sequence (zero-width characters, bidi controls, soft
hyphens, no-break spaces), and every character a reader takes for a digit counts as one
(superscripts, circled digits, kanji numerals, Arabic-Indic digits).

All identifiers are synthetic My Numbers with a valid check digit.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest

from dlpgate.masking import mask_number, mask_text
from tests.test_approval_support import my_number

KANJI = "〇一二三四五六七八九"


def digits_of(text: str) -> str:
    """The digit sequence a reader sees in `text` (letters break it: they are kept as they are)."""
    out = []
    for c in text:
        if c in KANJI:
            out.append(str(KANJI.index(c)))
        elif unicodedata.digit(c, None) is not None:
            out.append(str(unicodedata.digit(c)))
        elif c.isalpha():
            out.append("|")
    return "".join(out)


def leaks(text: str, digits: str) -> bool:
    return digits in digits_of(text)


N = my_number("98765432100")  # 987654321008
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
SUPER = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
CIRCLED = str.maketrans("0123456789", "⓪①②③④⑤⑥⑦⑧⑨")
KANJI_T = str.maketrans("0123456789", KANJI)


def grouped(n: str, sep: str) -> str:
    return f"{n[:4]}{sep}{n[4:8]}{sep}{n[8:]}"


HOSTILE = {
    "zero-width space": grouped(N, "\u200b"),
    "word joiner": grouped(N, "\u2060"),
    "soft hyphen": grouped(N, "\u00ad"),
    "byte order mark": grouped(N, "\ufeff"),
    "zero-width joiner": grouped(N, "\u200d"),
    "zero-width space between every digit": "\u200b".join(N),
    "two zero-width characters and a space": grouped(N, "\u200b \u2060"),
    "bidi override": f"{N[:4]}\u202e{N[4:8]}\u202c{N[8:]}",
    "no-break space": grouped(N, "\u00a0"),
    "narrow no-break space": grouped(N, "\u202f"),
    "thin space": grouped(N, "\u2009"),
    "figure space": grouped(N, "\u2007"),
    "small em dash": grouped(N, "\ufe58"),
    "two-em dash": grouped(N, "\u2e3a"),
    "header folded (CRLF SP)": f"{N[:4]}\r\n {N[4:8]} {N[8:]}",
    "header folded (LF TAB)": f"{N[:6]}\n\t{N[6:]}",
    "Arabic-Indic digits with zero-width spaces": "\u200b".join(N.translate(ARABIC)),
    "superscript digits": N.translate(SUPER),
    "circled digits": N.translate(CIRCLED),
    "kanji numerals": N.translate(KANJI_T),
    "kanji numerals grouped": grouped(N.translate(KANJI_T), "\u3000"),
    "keycap digits": "".join(c + "\ufe0f\u20e3" for c in N),
    "underlined digits": "".join(c + "\u0332" for c in N),
    "variation selector in a group": f"{N[:4]}\ufe0f{N[4:]}",
}


@pytest.mark.parametrize("where", sorted(HOSTILE))
def test_hostile_spellings_are_masked(where: str) -> None:
    text = f"件名 個人番号 {HOSTILE[where]} 送付"
    out = mask_text(text)
    assert not leaks(out, N), (where, out)
    assert mask_number(N) in out, (where, out)  # the first four digits are kept, the rest starred
    assert mask_text(out) == out  # stable


def test_what_masking_leaves_alone() -> None:
    """The margin stays a margin: short numbers, a column of codes one per line, a range and times
    are no identifiers."""
    for text in ("1234\n5678\n9012", "1234\r\n5678", "第1234号 5678件", "10:00〜12:00", "内線 1234\u200b",
                 "2024年1月15日", "一二三四", "会議室 3\u00a0階"):
        assert mask_text(text) == text, text


def test_character_tables_are_whole() -> None:
    """spans.py builds its tables from a list of Unicode blocks (a walk over all of Unicode at every
    command's start would cost ~0.2 s): the blocks hold every character of each kind."""
    from dlpgate.scan import spans
    from dlpgate.scan.normalize import RAW_SEPARATORS

    every = [chr(cp) for cp in range(0x110000)]
    assert spans.INVISIBLE == "".join(c for c in every if unicodedata.category(c) == "Cf")
    assert spans.EXTRA_SEPARATORS == "".join(
        c for c in every if unicodedata.category(c) in ("Zs", "Pd") and c not in RAW_SEPARATORS + " \u301c\u3030")
    assert spans.OTHER_DIGITS == "".join(
        c for c in every if c.isdigit() and unicodedata.category(c) != "Nd") + spans.KANJI_DIGITS


# ----------------------------------------------------------------- hostile places, end to end
# One held message carries a different number in each place a sender controls; every output of a
# real gateway (SMTP reply, notices, CLI text and JSON, audit export, send log, logs, metrics) is
# searched for each of them.

def _b64_words(text: str, charset: str, cut: int) -> str:
    """`text` as two RFC 2047 encoded-words split at character `cut` (a number split across them)."""
    import base64

    a, b = text[:cut], text[cut:]
    ea, eb = a.encode(charset), b.encode(charset)  # apart: an ISO-2022-JP word ends in ASCII mode
    return (f"=?{charset}?B?{base64.b64encode(ea).decode()}?=\r\n"
            f" =?{charset}?B?{base64.b64encode(eb).decode()}?=")


def _zip_with_member(name: str, data: bytes) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


def _xlsx(sheet: str, comment_text: str, n_body: str) -> bytes:
    import io

    from openpyxl import Workbook
    from openpyxl.comments import Comment

    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws["A1"] = "氏名"
    ws["B1"] = "個人番号"
    ws["A2"] = "見本 太郎"
    ws["B2"] = n_body
    ws["A2"].comment = Comment(comment_text, "x")
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def hostile_mail(nums: dict[str, str], sender: str, rcpts: list[str]) -> bytes:
    import base64
    from urllib.parse import quote

    n = nums
    subject = (_b64_words(f"個人番号 {n['subject iso-2022-jp']}", "iso-2022-jp", 8) + "\r\n "
               + _b64_words(f"件 {grouped(n['subject shift_jis'], chr(0x3000))}", "shift_jis", 6)
               + f"\r\n {n['subject folded'][:4]}\r\n {n['subject folded'][4:8]}\u200b{n['subject folded'][8:]}")
    fname = f"名簿_{grouped(n['filename rfc2231'], chr(0x200b))}.csv"
    enc = quote(fname.encode("utf-8"), safe="")
    cut = enc.index("%E2%80%8B") + 9  # the continuation splits the number
    csv = f"氏名,個人番号\n山田,{n['csv body']}\n".encode()
    zipped = _zip_with_member(f"内訳/{grouped(n['zip member'], '-')}.txt", f"個人番号 {n['zip body']}\n".encode())
    xlsx = _xlsx(f"S{n['sheet name'][:4]}\u00a0{n['sheet name'][4:]}"[:31], f"確認 {grouped(n['xlsx comment'], ' ')}",
                 n["xlsx cell"])
    boundary = "b0undary"
    display = base64.b64encode(f"山田 {grouped(n['from display name'], chr(0xa0))}".encode()).decode()
    lines = [
        f"From: =?utf-8?B?{display}?= <{sender}>",
        f"To: {', '.join(rcpts)}",
        f"Subject: {subject}",
        f"Message-ID: <{n['message-id']}.{grouped(n['message-id'], chr(0x2060))}@example.jp>",
        f"X-Case-Number: {n['x header']}",
        f"Reply-To: <r{n['reply-to']}@example.jp>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"マイナンバー {n['body']} を送ります。https://example.com/?q={n['url']}",
        f"--{boundary}",
        "Content-Type: text/csv",
        "Content-Transfer-Encoding: base64",
        f"Content-Disposition: attachment; filename*0*=utf-8''{enc[:cut]};\r\n filename*1*={enc[cut:]}",
        "",
        base64.encodebytes(csv).decode().strip().replace("\n", "\r\n"),
        f"--{boundary}",
        "Content-Type: application/zip",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="naiyo.zip"',
        "",
        base64.encodebytes(zipped).decode().strip().replace("\n", "\r\n"),
        f"--{boundary}",
        "Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="meibo.xlsx"',
        "",
        base64.encodebytes(xlsx).decode().strip().replace("\n", "\r\n"),
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


PLACES = ("subject iso-2022-jp", "subject shift_jis", "subject folded", "filename rfc2231", "csv body",
          "zip member", "zip body", "sheet name", "xlsx comment", "xlsx cell", "from display name",
          "message-id", "x header", "reply-to", "body", "url", "ehlo", "rcpt local part",
          "reject reason", "refused approver claim", "refused id")


async def test_hostile_places_end_to_end(tmp_path: Path, capfd: Any, caplog: Any) -> None:
    import asyncio
    import json
    import logging
    import smtplib

    from prometheus_client import generate_latest

    from dlpgate import metrics
    from tests.conftest import Sink, running
    from tests.test_approval_loop import cli, gateway_config, held_id, poke, wait_for
    from tests.test_approval_support import synthetic_numbers
    from tests.test_leakproof_masking import decoded

    caplog.set_level(logging.DEBUG, logger="dlpgate")
    nums = dict(zip(PLACES, synthetic_numbers(len(PLACES), seed=3333), strict=True))
    sender = "tanaka@soumu.example.jp"
    odd_rcpt = f"p{nums['rcpt local part']}@example.com"
    rcpts = ["partner@example.com", odd_rcpt]
    sink = Sink()
    sink.start()
    try:
        cfg, c = gateway_config(tmp_path, sink)
        checked: dict[str, str] = {}
        async with running(cfg) as gw:
            def send() -> tuple[int, str]:
                with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
                    s.ehlo(f"h{nums['ehlo']}.example.jp")
                    assert s.mail(sender)[0] == 250
                    for r in rcpts:
                        assert s.rcpt(r)[0] == 250
                    code, text = s.data(hostile_mail(nums, sender, rcpts))
                    return code, text.decode()

            code, reply = await asyncio.to_thread(send)
            assert code == 250, reply
            checked["smtp reply"] = reply
            mid = held_id(reply)
            poke(gw)
            h = sink.handler
            await wait_for(lambda: h.to(sender) and h.to("kacho@example.jp"))
            checked["notice to sender"] = decoded(h.to(sender)[0].data)
            checked["notice to approver"] = decoded(h.to("kacho@example.jp")[0].data)
            for argv in (("quarantine", "list"), ("quarantine", "list", "--json"), ("quarantine", "show", mid),
                         ("quarantine", "show", mid, "--json")):
                code, out, err = await cli(*argv, "--config", c)
                assert code == 0, err
                checked[" ".join(argv).replace(mid, "ID")] = out + err
            shown = json.loads(checked["quarantine show ID --json"])
            assert len(shown["mime_parts"]) >= 4 and shown["findings"], shown
            # refusals: a claimed approver address and an id that carry numbers
            code, out, err = await cli("quarantine", "release", mid, "--approver",
                                       f"a{nums['refused approver claim']}@example.jp", "--config", c)
            assert code == 2
            checked["refused approver claim"] = out + err
            code, out, err = await cli("quarantine", "release", grouped(nums["refused id"], "\u200b"), "--config", c)
            assert code == 2
            checked["refused id"] = out + err
            code, out, err = await cli("quarantine", "reject", mid, "--reason",
                                       f"番号 {grouped(nums['reject reason'], chr(0xad))} は不可", "--config", c)
            assert code == 0, err
            checked["reject output"] = out + err
            poke(gw)
            await wait_for(lambda: len(h.to(sender)) >= 2)
            checked["notice after reject"] = "\n".join(decoded(x.data) for x in h.to(sender)[1:])
            for argv in (("audit", "export"), ("audit", "export", "--json"), ("log", "search"),
                         ("log", "search", "--json"), ("quarantine", "show", mid), ("quarantine", "show", mid, "--json")):
                code, out, err = await cli(*argv, "--config", c)
                assert code == 0, err
                checked["after: " + " ".join(argv).replace(mid, "ID")] = out + err
        checked["metrics"] = generate_latest(metrics.REGISTRY).decode()
    finally:
        sink.stop()
    captured = capfd.readouterr()
    checked["stdout/stderr"] = captured.out + captured.err
    checked["log records"] = "\n".join(
        f"{r.getMessage()} {json.dumps({k: str(v) for k, v in r.__dict__.items()}, ensure_ascii=False)}"
        for r in caplog.records)
    found = sorted({f"{place} -> {where}" for where, text in checked.items() for place, d in nums.items()
                    if leaks(text, d)})
    assert not found, "\n".join(found)


def test_archive_and_offline_scan_outputs_of_hostile_places(tmp_path: Path) -> None:
    """`dlpgate archive --json --report` and `dlpgate scan --json --explain` over the same hostile
    message (saved as an mbox and as an .eml): JSON lines, stderr, the HTML and CSV reports."""
    import subprocess
    import sys

    from tests.test_approval_support import synthetic_numbers

    nums = dict(zip(PLACES, synthetic_numbers(len(PLACES), seed=3434), strict=True))
    raw = hostile_mail(nums, "tanaka@soumu.example.jp", ["partner@example.com", f"p{nums['rcpt local part']}@example.com"])
    # the file names are the sender's too: a saved message named after its subject
    eml = tmp_path / f"件名_{grouped(nums['ehlo'], chr(0x200b))}.eml"
    eml.write_bytes(raw)
    mbox = tmp_path / "archive.mbox"
    mbox.write_bytes(b"From tanaka@soumu.example.jp Mon Dec  1 10:00:00 2026\n" + raw.replace(b"\r\n", b"\n") + b"\n")
    report = tmp_path / "report"
    cli = [sys.executable, "-m", "dlpgate.cli"]
    outputs: dict[str, str] = {}
    for name, argv in (("archive --json", [*cli, "archive", str(mbox), str(eml), "--json", "--report", str(report)]),
                       ("scan --json --explain", [*cli, "scan", "--json", "--explain", str(eml)]),
                       ("scan", [*cli, "scan", str(eml)])):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert p.returncode in (0, 1), p.stderr
        outputs[name] = p.stdout + p.stderr
    assert '"verdict": "hold"' in outputs["archive --json"] and '"verdict": "hold"' in outputs["scan --json --explain"]
    files = sorted(report.rglob("*"))
    assert any(f.suffix == ".html" for f in files) and any(f.suffix == ".csv" for f in files), files
    for f in files:
        if f.is_file():
            outputs[f"report {f.name}"] = f.read_text(encoding="utf-8", errors="replace")
    found = sorted({f"{place} -> {where}" for where, text in outputs.items() for place, d in nums.items()
                    if leaks(text, d)})
    assert not found, "\n".join(found)


async def test_web_console_pages_of_the_hostile_message(tmp_path: Path, sink: Any) -> None:
    """The console over HTTP (signed in through a trusted proxy: this process, in web.proxy_users):
    every page the approver and the sender see of the hostile message, a reject whose typed
    reason carries a number split by soft hyphens, the refusal page the sender gets for deciding
    on their own mail, and the audit download."""
    import asyncio
    import re
    import smtplib
    import urllib.parse

    from dlpgate.config import load_config
    from tests.conftest import running
    from tests.test_approval_support import synthetic_numbers
    from tests.test_web_proxy_tls import PROXY_USER, _cookie, _root, get, write_config

    nums = dict(zip(PLACES, synthetic_numbers(len(PLACES), seed=3535), strict=True))
    cfg = load_config(write_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.2/32"]\n'
                                   + PROXY_USER))
    sender = "tanaka@soumu.example.jp"
    pages: dict[str, str] = {}
    async with running(cfg) as gw:
        def send() -> str:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
                s.ehlo(f"h{nums['ehlo']}.example.jp")
                rcpts = ["partner@example.com", f"p{nums['rcpt local part']}@example.com"]
                s.sendmail(sender, rcpts, hostile_mail(nums, sender, rcpts))
                return ""
        await asyncio.to_thread(send)
        rows = await gw.authority.call(_root(), "quarantine.list", {"state": "held"})
        mid = rows[0]["id"]
        port = gw.web.port

        async def as_(login: str, path: str, cookie: str = "", **kw: Any) -> Any:
            hdrs = {"X-Remote-User": login, **({"cookie": cookie} if cookie else {})}
            r = await asyncio.to_thread(get, port, path, source="127.0.0.2", headers=hdrs, **kw)
            pages[f"{login} {kw.get('method', 'GET')} {path.replace(mid, 'ID')}"] = r.body.decode()
            return r

        r = await as_("kacho", "/approvals")
        assert r.status == 200 and mid in r.body.decode()
        cookie = _cookie(r, "dlpgate_session")
        r = await as_("kacho", f"/m/{mid}", cookie)
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr]
        reason = f"番号 {grouped(nums['reject reason'], chr(0xad))} は送れません"
        body = urllib.parse.urlencode({"csrf": csrf, "decision": "reject", "reason": reason})
        r = await as_("kacho", f"/m/{mid}/decide", cookie, method="POST", body=body)
        nonce = re.search(r'name="nonce" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr]
        # the sender, signed in too, tries to decide on their own mail: a refusal page
        r = await as_("tanaka", "/mine")
        tcookie = _cookie(r, "dlpgate_session")
        tcsrf = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr]
        body2 = urllib.parse.urlencode({"csrf": tcsrf, "decision": "release", "reason": reason})
        r = await as_("tanaka", f"/m/{mid}/decide", tcookie, method="POST", body=body2)
        tnonce = re.search(r'name="nonce" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr]
        r = await as_("tanaka", "/confirm", tcookie, method="POST",
                      body=urllib.parse.urlencode({"csrf": tcsrf, "nonce": tnonce}))
        assert r.status == 403, r.status  # the authority refuses self-approval
        r = await as_("kacho", "/confirm", cookie, method="POST", body=urllib.parse.urlencode({"csrf": csrf, "nonce": nonce}))
        assert r.status == 200
        await as_("kacho", f"/m/{mid}", cookie)
        r = await as_("kacho", f"/admin/audit.json?id={mid}", cookie)
        assert r.status == 200 and "rejected" in r.body.decode()
        await as_("tanaka", "/mine", tcookie)
        await as_("tanaka", f"/m/{mid}", tcookie)
    found = sorted({f"{place} -> {where}" for where, text in pages.items() for place, d in nums.items()
                    if leaks(text, d)})
    assert not found, "\n".join(found)
    assert mask_number(nums["reject reason"]) in pages["kacho POST /m/ID/decide"]  # the typed reason, masked


@pytest.mark.parametrize("argv", [
    ["audit", "export", "--since", "{n}x"],
    ["config", "check", "--config", "/nonexistent/dlpgate_{n}.toml"],
    ["rules", "check", "/nonexistent/rules_{n}"],
    ["auth", "list", "/nonexistent/users_{n}"],
    ["web-user", "list", "/nonexistent/accounts_{n}"],
    ["archive", "/nonexistent/mail_{n}.mbox"],
    ["scan", "/nonexistent/mail_{n}.eml"],
    ["archive", "/nonexistent/x.mbox", "--jobs", "{n}x"],
    ["quarantine", "list", "--state", "{n}"],
])
def test_the_clis_one_line_errors_mask_what_was_typed(argv: list[str], tmp_path: Path) -> None:
    """A mistyped command quoting an identifier back (a path named after its content, a pasted
    number where a time or state was wanted) prints its one line masked, exit 2 (scan: 2 too)."""
    from tests.test_approval_support import run_cli

    n = "\u200b".join((N[:4], N[4:8], N[8:])) if argv[0] == "scan" else N
    args = [a.replace("{n}", n) for a in argv]
    if argv[0] == "quarantine":
        args += ["--config", str(tmp_path / "none.toml")]
        (tmp_path / "none.toml").write_text(f'[store]\npath = "{tmp_path}/s"\n')
    code, out, err = run_cli(args)
    assert code in (1, 2), (code, out, err)
    assert err.strip(), out
    assert not leaks(out + err, N), out + err


def test_json_log_lines_mask_every_kind_of_extra_field() -> None:
    """The formatters are the last line of defence: an extra field that is a tuple, a dict, a set
    or any object (printed with str) is masked like a str or a list (the JSON formatter passed
    everything but str and list through as it was)."""
    import json
    import logging
    from pathlib import PurePosixPath

    from dlpgate.logs import JsonFormatter, TextFormatter

    spaced = grouped(N, "\u3000")
    rec = logging.LogRecord("dlpgate.test", logging.INFO, __file__, 1, "accepted", (), None)
    rec.rcpts = (f"p{N}@example.com",)
    rec.detail = {"part": f"名簿_{spaced}.csv", "nested": [{"x": spaced}], "n": 3}
    rec.names = {f"{N}.csv"}
    rec.path = PurePosixPath(f"/tmp/{N}.eml")
    rec.msg_id = "fnfjhntfjxgshgjgpf"
    rec.size = 98765432100  # a number-typed field is a count, not text: left alone
    for fmt in (JsonFormatter(), TextFormatter("%(message)s")):
        out = fmt.format(rec)
        assert not leaks(out.replace("98765432100", ""), N), out
        assert "fnfjhntfjxgshgjgpf" in out
    d = json.loads(JsonFormatter().format(rec))
    assert d["detail"]["n"] == 3 and d["size"] == 98765432100
