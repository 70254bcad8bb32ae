"""Business-mail corpus (issue 16): dense-number negatives, header variants, tables in every layout,
and the attachment formats real mail carries. Synthetic and deterministic: every number is drawn
from a seeded generator (My Numbers get a computed check digit), every name is a sample name.

    .venv/bin/python tests/corpus/business.py [--dir OUT]     # figures: recall, false holds, records

Each case is one file as `dlpgate scan` sees it (sent to one external recipient) with its label:
`leak` (it must be held for its content), `records` (the exact largest personal-records count, or
None where the case says nothing about records) and `must` (detectors that must fire). The figures
are printed for whatever `dlpgate` is importable, so the same script measures an older checkout:
`PYTHONPATH=/path/to/old .venv/bin/python tests/corpus/business.py`.
"""

from __future__ import annotations

import argparse
import bz2
import datetime
import gzip
import html
import json
import lzma
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fixtures"))

import legacy_formats as lf  # noqa: E402
import make_fixtures as fx  # noqa: E402

SEED = 20261202
NAMES = [s + " " + g for s in fx.SURNAMES for g in fx.GIVEN]


@dataclass(frozen=True)
class BizCase:
    name: str  # file name (its suffix tells the format)
    data: bytes
    leak: bool  # must be held for its content
    records: int | None = None  # exact largest personal-records count, None: not judged
    must: frozenset[str] = field(default_factory=frozenset)  # detectors that must fire
    kind: str = ""  # family, for the report


def my_number(r: random.Random) -> str:
    return fx.my_number(r)


def digits(r: random.Random, n: int) -> str:
    return "".join(str(r.randrange(10)) for _ in range(n))


def valid_only(r: random.Random, make: Callable[[], str]) -> str:
    """A number from `make` that happens to pass the My Number check digit (a chance pass)."""
    from dlpgate.scan.checks import is_valid_my_number

    while True:
        v = make()
        if is_valid_my_number(v):
            return v


def upc_a(r: random.Random) -> str:
    body = digits(r, 11)
    s = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(body))
    return body + str((10 - s % 10) % 10)


def jan13(r: random.Random) -> str:
    body = "49" + digits(r, 10)
    s = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - s % 10) % 10)


def stamp(r: random.Random) -> str:
    t = datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=r.randrange(525_600))
    return t.strftime("%Y%m%d%H%M")


def person(r: random.Random, i: int) -> dict[str, str]:
    return {
        "name": r.choice(NAMES),
        "kana": "シケン タロウ",
        "address": f"架空県見本市{r.choice(fx.TOWNS)}{r.randint(1, 9)}-{r.randint(1, 30)}",
        "birth": f"{r.randint(1940, 2010)}/{r.randint(1, 12):02d}/{r.randint(1, 28):02d}",
        "phone": f"090-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
        "mn": my_number(r),
        "no": str(i),
    }


def csv_of(rows: list[tuple[object, ...]], encoding: str = "utf-8") -> bytes:
    return fx.csv_bytes(rows, encoding=encoding)


def eml(body: str, attachments: list[tuple[str, bytes]] | None = None, subject: str = "送付",
        headers: dict[str, str] | None = None, html_body: str = "", ctype: tuple[str, str] | None = None) -> bytes:
    msg = EmailMessage(policy=default_policy)
    msg["From"] = "職員 <staff@example.jp>"
    msg["To"] = "相手 <someone@example.com>"
    msg["Subject"] = subject
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    if html_body:
        msg.add_alternative(html_body, subtype="html")
    for name, data in attachments or []:
        maintype, subtype = ctype or ("application", "octet-stream")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def build() -> list[BizCase]:  # noqa: C901 - one list of cases, read top to bottom
    r = random.Random(SEED)
    cases: list[BizCase] = []

    def add(name: str, data: bytes, leak: bool, records: int | None = None, must: tuple[str, ...] = (),
            kind: str = "") -> None:
        assert all(c.name != name for c in cases), name
        cases.append(BizCase(name, data, leak, records, frozenset(must), kind))

    # ================= dense-number negatives (no personal data; nothing to hold)
    def orders(n: int, with_label: bool = True, title: bool = False) -> list[tuple[object, ...]]:
        head = ("注文番号" if with_label else "受注ID", "注文日時", "商品名", "数量", "金額")
        rows: list[tuple[object, ...]] = [("受注データ出力", "", "", "", ""), ("", "", "", "", "")] if title else []
        rows.append(head)
        for _ in range(n):
            rows.append((digits(r, 12), f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} 10:{r.randint(10, 59)}",
                         r.choice(["ボールペン", "コピー用紙", "ファイル", "封筒"]), r.randint(1, 50), r.randint(100, 99999)))
        return rows

    add("neg_orders_200.csv", csv_of(orders(200)), False, kind="orders")
    add("neg_orders_200_cp932.csv", csv_of(orders(200), "cp932"), False, kind="orders")
    add("neg_orders_200.xlsx", fx.xlsx_bytes({"受注": orders(200, title=True)}), False, kind="orders")
    add("neg_orders_unlabelled_150.csv", csv_of(orders(150, with_label=False)), False, kind="orders")
    add("neg_orders_unlabelled_30.xlsx", fx.xlsx_bytes({"受注": orders(30, with_label=False)}), False, kind="orders")
    add("neg_orders_chance_valid.csv",
        csv_of([("注文番号", "金額")] + [(valid_only(r, lambda: digits(r, 12)), r.randint(100, 9999)) for _ in range(5)]),
        False, kind="orders")
    add("neg_orders_note_keyword.csv",
        ("# 個人番号は含みません\n" + "\n".join(",".join(map(str, row)) for row in orders(40))).encode(), False,
        kind="orders")
    add("neg_orders_body.eml", eml("受注一覧です。\n" + "\n".join(f"{digits(r, 12)}\t{r.randint(1, 9)}個\t¥{r.randint(100, 9999)}"
                                                             for _ in range(60))), False, kind="orders")
    add("neg_orders_body_hyphen.eml", eml("ご注文の控え\n" + "\n".join(
        f"注文 {d[:4]}-{d[4:8]}-{d[8:]} 発送済" for d in (digits(r, 12) for _ in range(40)))), False, kind="orders")

    def catalogue(n: int, header: tuple[str, ...]) -> list[tuple[object, ...]]:
        return [header] + [(jan13(r), upc_a(r), r.choice(["ノート", "消しゴム", "定規"]), r.randint(100, 999))
                           for _ in range(n)]

    add("neg_catalogue_jan_upc.csv", csv_of(catalogue(120, ("JANコード", "UPC", "商品名", "単価"))), False, kind="catalogue")
    add("neg_catalogue_jan_upc.xlsx", fx.xlsx_bytes({"商品": catalogue(80, ("JANコード", "UPC", "商品名", "単価"))}),
        False, kind="catalogue")
    add("neg_catalogue_code.csv", csv_of(catalogue(60, ("コード1", "コード2", "品名", "価格"))), False, kind="catalogue")
    add("neg_catalogue_upc_chance.csv", csv_of([("商品コード", "品名", "単価")] + [
        (valid_only(r, lambda: upc_a(r)), "ノート", 120) for _ in range(4)]), False, kind="catalogue")
    add("neg_catalogue_upc_product_text.txt", ("商品のご案内（単価は税込）\n" + "\n".join(
        f"{valid_only(r, lambda: upc_a(r))}  ノート A5  単価 120円" for _ in range(3))).encode(), False, kind="catalogue")

    add("neg_log_stamps_300.txt", "\n".join(f"{stamp(r)} user{r.randint(1, 99)} login ok" for _ in range(300)).encode(),
        False, kind="log")
    add("neg_log_stamps_chance.txt", "\n".join(f"{valid_only(r, lambda: stamp(r))} batch finished rc=0"
                                               for _ in range(4)).encode(), False, kind="log")
    add("neg_log_stamps.csv", csv_of([("日時", "端末", "結果")] + [(stamp(r), f"PC{r.randint(1, 99)}", "OK")
                                                                  for _ in range(100)]), False, kind="log")
    add("neg_log_stamps_unlabelled.csv", csv_of([("時刻", "端末", "結果")] + [(valid_only(r, lambda: stamp(r)), "PC1", "OK")
                                                                          for _ in range(6)]), False, kind="log")

    def zengin(n: int, chance: bool = False) -> bytes:
        lines = ["1210" + "0" * 10 + "ｹﾝｼｮｳｼﾔ".ljust(40) + "1202" + "0001" + "ﾐﾎﾝｷﾞﾝｺｳ".ljust(15) + "001"
                 + "ﾎﾝﾃﾝ".ljust(15) + "1" + digits(r, 7) + " " * 17]
        for _ in range(n):
            cust = valid_only(r, lambda: digits(r, 12)) if chance else digits(r, 12)
            rec = ("2" + "0001" + "ﾐﾎﾝｷﾞﾝｺｳ".ljust(15) + f"{r.randint(1, 999):03d}" + "ﾎﾝﾃﾝ".ljust(15) + "    " + "1"
                   + digits(r, 7) + "ﾃｽﾄ ﾀﾛｳ".ljust(30) + f"{r.randint(1, 999999):010d}" + "0" + " " + cust + " " * 7
                   + "7" + " " * 7)
            lines.append(rec[:120].ljust(120))
        lines.append("8" + f"{n:06d}" + f"{n * 1000:012d}" + " " * 101)
        lines.append("9" + " " * 119)
        return "\r\n".join(lines).encode("cp932")

    add("neg_zengin_80.txt", zengin(80), False, kind="zengin")
    add("neg_zengin_chance_3.txt", zengin(3, chance=True), False, kind="zengin")

    add("neg_tracking_column.csv", csv_of([("追跡番号", "配達予定日", "届け先")] + [
        (digits(r, 12), "2024/12/03", "営業所止め") for _ in range(100)]), False, kind="tracking")
    add("neg_tracking_list.txt", ("以下の荷物を発送しました。\n" + "\n".join(
        f"{d[:4]}-{d[4:8]}-{d[8:]}  1個口" for d in (digits(r, 12) for _ in range(50)))).encode(), False, kind="tracking")
    add("neg_tracking_chance.eml", eml("発送のお知らせ\n" + "\n".join(
        f"お問い合わせ伝票 {valid_only(r, lambda: digits(r, 12))}" for _ in range(3))), False, kind="tracking")

    def fixed(n: int, chance: bool) -> bytes:
        lines = []
        for i in range(n):
            acct = valid_only(r, lambda: digits(r, 12)) if chance else digits(r, 12)
            lines.append(f"D{i:05d} {acct} {r.randint(1, 99999999):010d} 20241201 JPY ACTIVE   ")
        return "\n".join(lines).encode()

    add("neg_fixed_width_200.txt", fixed(200, False), False, kind="fixed")
    add("neg_fixed_width_chance.txt", fixed(4, True), False, kind="fixed")
    add("neg_accounts_column.xlsx", fx.xlsx_bytes({"口座": [("口座番号", "支店", "種別")] + [
        (int(digits(r, 12)), "本店", "普通") for _ in range(60)]}), False, kind="accounts")
    add("neg_invoice_column.csv", csv_of([("請求番号", "伝票番号", "管理番号", "金額")] + [
        (digits(r, 12), digits(r, 12), digits(r, 12), r.randint(1000, 99999)) for _ in range(80)]), False, kind="invoice")
    add("neg_members_column_chance.csv", csv_of([("会員番号", "ランク")] + [
        (valid_only(r, lambda: digits(r, 12)), "ゴールド") for _ in range(5)]), False, kind="invoice")
    add("neg_reception_header_deep.xlsx", fx.xlsx_bytes({"受付": [("受付一覧",)] + [("",)] * 29 + [("受付番号", "受付日", "件名")] + [
        (valid_only(r, lambda: digits(r, 12)), "2024/11/01", "問合せ") for _ in range(5)]}), False, kind="invoice")
    add("neg_orders_html.eml", eml("注文一覧", html_body="<table><tr><th>注文番号</th><th>金額</th></tr>" + "".join(
        f"<tr><td>{valid_only(r, lambda: digits(r, 12))}</td><td>{r.randint(100, 999)}</td></tr>" for _ in range(4))
        + "</table>"), False, kind="orders")
    add("neg_placeholder_form.txt", "個人番号：000000000000（記入例）\nマイナンバー 999999999999 は見本です。\n".encode(),
        False, kind="placeholder")
    add("neg_message_id_zeros.eml", eml("会議の件、承知しました。", headers={
        "Message-ID": "<000000000000.123456789018@mail.example.jp>",
        "In-Reply-To": "<000000000000@mail.example.jp>",
        "References": "<123456789018@mail.example.jp> <000000000000@mail.example.jp>"}), False, kind="headers")
    received_block = ("Received: from mx.example.jp (mx.example.jp [192.0.2.1])\r\n\tby relay.example.jp with ESMTP id"
                      " 000000000000; Mon, 2 Dec 2026 10:00:00 +0900\r\nMessage-ID: <123456789018@example.jp>\r\n"
                      "DKIM-Signature: v=1; a=rsa-sha256; d=example.jp; s=000000000000; bh=123456789018\r\n"
                      "Subject: test\r\n")
    add("neg_bounce_headers.eml", eml("配信できませんでした。", attachments=[("headers.txt", received_block.encode())],
                                      ctype=("text", "rfc822-headers")), False, kind="headers")

    # ================= positives: personal data in every layout
    def roster(people: list[dict[str, str]], head: tuple[str, ...], keys: tuple[str, ...]) -> list[tuple[object, ...]]:
        return [head] + [tuple(p[k] for k in keys) for p in people]

    ppl = [person(r, i) for i in range(1, 31)]
    deep = [("令和6年度 給付金対象者一覧",)] + [("",)] * 3 + [(f"注記{i}: 本表は内部資料です",) for i in range(1, 22)]
    add("pos_header_row_26.xlsx", fx.xlsx_bytes({"対象者": deep + roster(ppl, ("氏名", "住所", "生年月日", "個人番号"),
                                                                         ("name", "address", "birth", "mn"))}),
        True, 30, ("my_number", "personal_records"), kind="deep header")
    add("pos_header_row_40_noid.xlsx", fx.xlsx_bytes({"名簿": [("名簿",)] + [("",)] * 38 + roster(
        ppl[:20], ("氏名", "住所", "生年月日", "電話番号"), ("name", "address", "birth", "phone"))}),
        True, 20, ("personal_records",), kind="deep header")
    variants = [("氏　名", "住　所", "生年月日"), ("ﾌﾘｶﾞﾅ", "現住所", "生年月日（和暦）"), ("カナ氏名", "住所１", "性　別"),
                ("お名前", "ご住所", "生年月日"), ("氏名(漢字)", "住所（番地まで）", "TEL"), ("ｼﾒｲ", "ｼﾞｭｳｼｮ", "ｾｲﾈﾝｶﾞｯﾋﾟ"),
                ("氏名１", "住所２", "電話番号3"), ("【氏名】", "［住所］", "〈生年月日〉")]
    for i, head in enumerate(variants):
        rows = [head] + [(p["name"], p["address"], p["birth"]) for p in ppl[:12]]
        add(f"pos_header_variant_{i}.csv", csv_of(rows), True, 12, ("personal_records",), kind="header variant")
    add("pos_keyword_halfwidth.txt", f"ﾏｲﾅﾝﾊﾞｰ：{my_number(r)}\n".encode(), True, None, ("my_number",), kind="keyword variant")
    add("pos_keyword_spaced.txt", f"個人　番号 {my_number(r)}\n".encode(), True, None, ("my_number",), kind="keyword variant")
    add("pos_keyword_bracket.txt", f"個人番号（マイナンバー）\n{my_number(r)}\n".encode(), True, None, ("my_number",),
        kind="keyword variant")

    # fields down a column: one person per column
    five = ppl[:5]
    vertical = [("氏名", *(p["name"] for p in five)), ("住所", *(p["address"] for p in five)),
                ("生年月日", *(p["birth"] for p in five)), ("個人番号", *(p["mn"] for p in five))]
    add("pos_vertical_5.xlsx", fx.xlsx_bytes({"一覧": vertical}), True, 5, ("my_number", "personal_records"),
        kind="vertical")
    add("pos_vertical_12.csv", csv_of([("氏名", *(p["name"] for p in ppl[:12])), ("住所", *(p["address"] for p in ppl[:12])),
                                       ("電話番号", *(p["phone"] for p in ppl[:12]))]), True, 12, ("personal_records",),
        kind="vertical")

    # forms: label cell beside value cell
    def form(p: dict[str, str]) -> list[tuple[object, ...]]:
        return [("申請書", ""), ("氏名", p["name"]), ("フリガナ", p["kana"]), ("住所", p["address"]),
                ("生年月日", p["birth"]), ("個人番号", p["mn"]), ("", "")]

    add("pos_form_one_per_sheet.xlsx", fx.xlsx_bytes({f"申請{i}": form(p) for i, p in enumerate(ppl[:3], 1)}), True, 1,
        ("my_number", "personal_records"), kind="form")
    add("pos_form_blocks_12.xlsx", fx.xlsx_bytes({"申請": [row for p in ppl[:12] for row in form(p)]}), True, 12,
        ("my_number", "personal_records"), kind="form")
    add("pos_form_blocks_noid_15.csv", csv_of([row for p in ppl[:15] for row in form(p) if row[0] != "個人番号"]),
        True, 15, ("personal_records",), kind="form")

    body_form = "\n\n".join(f"氏名：{p['name']}\n住所：{p['address']}\n生年月日：{p['birth']}\n個人番号：{p['mn']}"
                              for p in ppl[:2])
    add("pos_body_form_2.eml", eml("申請内容を転記します。\n\n" + body_form), True, 2, ("my_number", "personal_records"),
        kind="form")

    # multi-row headers
    two = [("", "氏名", "連絡先", "", "生年月日"), ("No", "", "電話番号", "住所", "")] + [
        (p["no"], p["name"], p["phone"], p["address"], p["birth"]) for p in ppl[:14]]
    add("pos_two_row_header_14.xlsx", fx.xlsx_bytes({"名簿": two}), True, 14, ("personal_records",), kind="multi-row")
    three = [("世帯情報", "", "", ""), ("氏名", "住所", "生年月日", "性別"), ("(漢字)", "(番地まで)", "(西暦)", "")] + [
        (p["name"], p["address"], p["birth"], "女") for p in ppl[:11]]
    add("pos_three_row_header_11.csv", csv_of(three), True, 11, ("personal_records",), kind="multi-row")

    # HTML tables: colspan/rowspan, a number split 4|4|4 under a 個人番号 header
    def cells(row: list[str], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) + "</tr>"

    split = "<table><tr><th>氏名</th><th>住所</th><th colspan=\"3\">個人番号</th></tr>" + "".join(
        cells([p["name"], p["address"], p["mn"][:4], p["mn"][4:8], p["mn"][8:]]) for p in ppl[:8]) + "</table>"
    add("pos_html_split_number.eml", eml("名簿を送ります", html_body=split), True, 8, ("my_number", "personal_records"),
        kind="html")
    span = ("<table><tr><th rowspan=\"2\">氏名</th><th colspan=\"2\">連絡先</th><th rowspan=\"2\">生年月日</th></tr>"
            "<tr><th>電話番号</th><th>住所</th></tr>" + "".join(
                cells([p["name"], p["phone"], p["address"], p["birth"]]) for p in ppl[:13]) + "</table>")
    add("pos_html_rowspan_13.html", span.encode(), True, 13, ("personal_records",), kind="html")
    add("pos_html_rowspan_body.eml", eml("一覧です", html_body=span), True, 13, ("personal_records",), kind="html")

    # numeric cells that lost their leading zero under 個人番号
    zeros = []
    while len(zeros) < 10:
        v = my_number(r)
        if v[0] == "0":
            zeros.append(v)
    add("pos_lost_zero.xlsx", fx.xlsx_bytes({"番号": [("個人番号", "備考")] + [(int(v), "") for v in zeros]}), True, None,
        ("my_number",), kind="lost zero")
    add("pos_lost_zero_roster.csv", csv_of([("氏名", "住所", "個人番号")] + [
        (p["name"], p["address"], str(int(v))) for p, v in zip(ppl, zeros, strict=False)]), True, 10,
        ("my_number", "personal_records"), kind="lost zero")

    # My Numbers without any keyword: the statistics say they are real
    add("pos_bare_list_6.txt", "\n".join(f"{i}. {my_number(r)}" for i in range(1, 7)).encode(), True, None,
        ("my_number",), kind="bare")
    add("pos_bare_column_20.csv", csv_of([("番号", "区分")] + [(my_number(r), "A") for _ in range(20)]), True, None,
        ("my_number",), kind="bare")
    add("pos_keyword_column_mixed.csv", csv_of([("個人番号", "備考")] + [(my_number(r), "") for _ in range(3)]),
        True, None, ("my_number",), kind="keyword column")
    add("pos_subject_mn.eml", eml("よろしくお願いします。", subject=f"個人番号 {my_number(r)} の件"), True, None,
        ("my_number",), kind="headers")

    # the formats
    roster12 = csv_of(roster(ppl[:12], ("氏名", "住所", "生年月日", "個人番号"), ("name", "address", "birth", "mn")))
    add("pos_winmail.dat", lf.tnef_bytes("名簿を添付します。", [("名簿.csv", roster12)]), True, 12,
        ("my_number", "personal_records"), kind="tnef")
    add("pos_winmail_attached.eml", eml("転送します", attachments=[("winmail.dat", lf.tnef_bytes("本文", [("名簿.csv", roster12)]))],
                                        ctype=("application", "ms-tnef")), True, 12, ("my_number", "personal_records"),
        kind="tnef")
    add("pos_legacy.doc", lf.doc_bytes(["対象者の一覧です。"], roster(ppl[:12], ("氏名", "住所", "生年月日", "個人番号"),
                                                                  ("name", "address", "birth", "mn"))),
        True, 12, ("my_number", "personal_records"), kind="doc")
    add("pos_legacy_text.doc", lf.doc_bytes([f"マイナンバー：{my_number(r)}", "以上"]), True, None, ("my_number",), kind="doc")
    add("pos_roster.csv.gz", gzip.compress(roster12, mtime=0), True, 12, ("my_number", "personal_records"), kind="gzip")
    add("pos_roster.7z", lf.sevenzip_bytes({"名簿.csv": roster12}), True, 12, ("my_number", "personal_records"), kind="7z")
    add("pos_roster.tar.gz", lf.tar_gz_bytes({"out/名簿.csv": roster12}), True, 12, ("my_number", "personal_records"),
        kind="gzip")
    add("neg_orders.csv.gz", gzip.compress(csv_of(orders(100)), mtime=0), False, kind="gzip")
    add("neg_orders.7z", lf.sevenzip_bytes({"orders.csv": csv_of(orders(100))}), False, kind="7z")
    # space-aligned listings pasted into a body (a terminal, a report printed as text): cells apart by gaps
    listing = ["氏名          生年月日      住所                    個人番号"] + [
        f"{p['name']:<10}  {p['birth']:<12}  {p['address']:<20}  {p['mn']}" for p in ppl]
    add("pos_space_aligned_listing.eml", eml("対象者の一覧です。\n\n" + "\n".join(listing)), True, 30,
        ("my_number", "personal_records"), kind="space")
    orders_listing = ["注文番号        商品名        数量"] + [
        f"{valid_only(r, lambda: digits(r, 12)) if i % 2 else digits(r, 12)}    {'ボールペン':<10}  {r.randint(1, 9)}"
        for i in range(40)]
    add("neg_space_aligned_orders.eml", eml("受注一覧\n" + "\n".join(orders_listing)), False, kind="space")
    # an account ID right above a footer that asks not to send マイナンバー: the ID is labelled, not a My Number
    add("neg_footer_after_customer_id.eml", eml(
        f"ご注文ありがとうございます。\nお客様ID {valid_only(r, lambda: digits(r, 12))}\n\n"
        "※本メールにマイナンバー（個人番号）等を記載しないでください。"), False, kind="footer")
    add("pos_number_then_keyword.eml", eml(f"{my_number(r)}（本人のマイナンバー）です。"), True, None, ("my_number",),
        kind="footer")
    # lists of places and companies (address, phone, mail, no person) are not personal records;
    # a person named by role (児童名, 患者名) and health fields (要配慮個人情報) are
    suppliers = [("会社名", "住所", "電話番号", "メールアドレス")] + [
        (f"見本商事{i}株式会社", f"架空県見本市{i}-1", f"03-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
         f"info{i}@supplier{i}.example.jp") for i in range(60)]
    add("neg_supplier_list_60.csv", csv_of(suppliers), False, kind="suppliers")
    add("neg_facility_list.xlsx", fx.xlsx_bytes({"施設": [("施設名", "所在地", "住所", "TEL")] + [
        (f"第{i}公民館", "見本市", f"架空県見本市{i}-2", f"0120-{r.randint(100, 999)}-{r.randint(100, 999)}")
        for i in range(40)]}), False, kind="suppliers")
    add("pos_children_roles.xlsx", fx.xlsx_bytes({"名簿": [("児童名", "保護者名", "生年月日", "住所")] + [
        (p["name"], "見本 保護者", p["birth"], p["address"]) for p in ppl[:15]]}), True, 15, ("personal_records",),
        kind="header variant")
    add("pos_patients_health.csv", csv_of([("患者名", "病名", "電話番号")] + [
        (p["name"], r.choice(["糖尿病", "高血圧", "喘息"]), "03-0000-0000") for p in ppl[:5]]), True, 5,
        ("personal_records",), kind="header variant")
    # a payroll (names beside pay) is personal records; an English header names the My Number column
    add("pos_payroll.xlsx", fx.xlsx_bytes({"給与": [("社員番号", "氏名", "基本給", "振込口座")] + [
        (digits(r, 6), p["name"], r.randint(200_000, 500_000), digits(r, 7)) for p in ppl[:25]]}), True, 25,
        ("personal_records",), kind="header variant")
    add("pos_english_header.csv", csv_of([("Name", "My Number", "Address")] + [
        (f"Taro Example {i}", p["mn"], f"{i} Example Street") for i, p in enumerate(ppl[:6])]), True, 6,
        ("my_number", "personal_records"), kind="header variant")
    # a register copied out of a PDF comes column by column: a label line, its values, a blank line
    pasted = "\n\n".join(label + "\n" + "\n".join(p[key] for p in ppl[:18]) for label, key in
                          (("氏名", "name"), ("生年月日", "birth"), ("住所", "address")))
    add("pos_pasted_columns.eml", eml("PDFからコピーしました。\n\n" + pasted), True, 18, ("personal_records",),
        kind="vertical")
    add("neg_contact_columns.eml", eml("拠点一覧\n\n住所\n" + "\n".join(f"架空県見本市{i}-1" for i in range(8))
                                       + "\n\n電話番号\n" + "\n".join(f"03-0000-{i:04d}" for i in range(8))), False,
        kind="suppliers")
    # a pandas export of a column with gaps writes each number as a decimal: 123456789012.0
    add("pos_pandas_export.csv", csv_of([("氏名", "住所", "個人番号")] + [
        (p["name"], p["address"], f"{p['mn']}.0" if i % 5 else "") for i, p in enumerate(ppl[:20])]), True, 20,
        ("my_number", "personal_records"), kind="lost zero")
    # tables typed with bars: Markdown from a chat or an AI tool, ｜ typed in Japanese input
    md = ["| 氏名 | 住所 | 生年月日 | 個人番号 |", "|---|---|---|:---:|"] + [
        f"| {p['name']} | {p['address']} | {p['birth']} | {p['mn']} |" for p in ppl[:15]]
    add("pos_markdown_register.eml", eml("一覧を貼ります。\n\n" + "\n".join(md)), True, 15, ("my_number", "personal_records"),
        kind="bars")
    bars = ["商品コード｜品名｜単価"] + [f"{valid_only(r, lambda: digits(r, 12))}｜ボールペン｜120" for _ in range(10)]
    add("neg_bar_product_codes.eml", eml("価格表\n" + "\n".join(bars)), False, kind="bars")
    add("pos_roster.csv.bz2", bz2.compress(roster12), True, 12, ("my_number", "personal_records"), kind="bzip2")
    add("neg_orders.tar.xz", lzma.compress(lf.tar_bytes({"out/orders.csv": csv_of(orders(100))})), False, kind="xz")
    # in-house and municipal system exports name their columns in romaji (SHIMEI, JUSHO, SEINENGAPPI ...);
    # the same exports of orders or products (SHOHIN_MEI, JUCHU_NO) are no personal records
    add("pos_romaji_columns.csv", csv_of([("SETAI_NO", "SHIMEI", "SHIMEI_KANA", "SEINENGAPPI", "ZOKUGARA", "JUSHO")] + [
        (digits(r, 8), p["name"], "ミホン タロウ", p["birth"], r.choice(["01", "02", "03"]), p["address"])
        for p in ppl[:25]]), True, 25, ("personal_records",), kind="header variant")
    # a municipal export keyed by its own resident number (宛名番号), 続き柄 spelt with き, 世帯コード
    add("pos_atena_register.csv", csv_of([("宛名番号", "氏名", "続き柄", "世帯コード")] + [
        (digits(r, 10), p["name"], r.choice(["世帯主", "妻", "子"]), digits(r, 8)) for p in ppl[:30]]), True, 30,
        ("personal_records",), kind="header variant")
    add("neg_supplier_contacts.csv", csv_of([("会社名", "連絡先", "所在地")] + [
        (f"見本商事{i}", f"03-0000-{i:04d}", f"架空県見本市{i}-1") for i in range(30)]), False, kind="suppliers")
    # a case note describes people in sentences: a birth date and an address per line, no header
    notes = [f"{p['name']}（昭和{r.randint(20, 63)}年{r.randint(1, 12)}月{r.randint(1, 28)}日生、{p['address']}）は"
             f"{r.choice(['児童手当', '介護保険', '国民健康保険'])}の対象。" for p in ppl[:9]]
    add("pos_case_notes.eml", eml("ケース記録の引き継ぎです。\n\n" + "\n".join(notes)), True, 9, ("personal_records",),
        kind="sentences")
    plant = [f"{2020 + i % 5}年{i % 12 + 1}月{i % 28 + 1}日生産開始、工場 架空県見本市本町{i}-1-2、"
             f"ライン{i} 製品コード {digits(r, 8)}" for i in range(1, 30)]
    add("neg_production_dates.eml", eml("生産計画\n" + "\n".join(plant)), False, kind="sentences")
    # forms typed into a body: a whole record per line (label：value pairs), or blocks whose labels and
    # values are cut by blanks; an event notice's pairs and a blank template are no records
    inline = [f"氏名：{p['name']}　生年月日：{p['birth']}　住所：{p['address']}" for p in ppl[:11]]
    add("pos_inline_form_lines.eml", eml("対象者\n" + "\n".join(inline)), True, 11, ("personal_records",), kind="forms")
    blocks = [f"【{i}】\n氏名　{p['name']}\n生年月日　{p['birth']}\n住所　{p['address']}" for i, p in enumerate(ppl[:7], 1)]
    add("pos_space_form_blocks.eml", eml("\n\n".join(blocks)), True, 7, ("personal_records",), kind="forms")
    add("neg_event_notice_pairs.eml", eml("説明会のご案内\n日時：12月3日 10:00　場所：架空県見本市本町1-2-3　"
                                          "連絡先：03-0000-0000\n持ち物：筆記用具　担当：総務課"), False, kind="forms")
    add("neg_blank_template.eml", eml("申込書の書き方\n氏名 （必須）\n住所 （必須）\n電話番号 （任意）\n"
                                      "生年月日 （任意）"), False, kind="forms")
    # a register ends with its total and a note: 25 records, not 27
    add("pos_roster_total_row.xlsx", fx.xlsx_bytes({"名簿": [("No", "氏名", "生年月日", "住所")] + [
        (str(i), p["name"], p["birth"], p["address"]) for i, p in enumerate(ppl[:25], 1)] + [
        ("合計", "25名", "", ""), ("※取扱注意", "", "", "")]}), True, 25, ("personal_records",), kind="totals")
    # customers' and policy holders' names are names; a supplier list's contact person is not a register
    add("pos_customer_orders.csv", csv_of([("注文番号", "注文日", "お客様名", "電話番号", "住所", "商品")] + [
        (digits(r, 8), "2026/11/01", p["name"], p["phone"], p["address"], "タオル") for p in ppl[:30]]), True, 30,
        ("personal_records",), kind="header variant")
    add("neg_supplier_contact_person.csv", csv_of([("会社名", "担当者名", "電話番号", "住所")] + [
        (f"見本商事{i}", p["name"], f"03-0000-{i:04d}", f"架空県見本市{i}-1") for i, p in enumerate(ppl[:20])]), False,
        kind="suppliers")
    # a name in two columns (姓 | 名) beside a birth date: a few residents are a register
    add("pos_sei_mei_short.csv", csv_of([("姓", "名", "生年月日", "電話番号")] + [
        (p["name"].split()[0] if " " in p["name"] else p["name"][:2], "太郎", p["birth"], p["phone"])
        for p in ppl[:6]]), True, 6, ("personal_records",), kind="header variant")
    # a register exported without its header row; branch and product lists without one are no register
    add("pos_headerless_register.csv", csv_of([(p["name"], p["address"], p["birth"], r.choice(["世帯主", "妻", "子"]))
                                               for p in ppl[:30]]), True, 30, ("personal_records",), kind="headerless")
    add("neg_headerless_branches.csv", csv_of([(f"{c} 支店", f"架空県見本市本町{i}-1-2", f"03-0000-{i:04d}") for i, c in
                                               enumerate(["札幌", "仙台", "新潟", "金沢", "静岡", "京都", "神戸", "広島",
                                                          "高松", "福岡", "熊本", "那覇"])]), False, kind="headerless")
    add("neg_headerless_deliveries.csv", csv_of([(digits(r, 8), f"2026/{r.randint(1, 12)}/{r.randint(1, 28)}",
                                                  r.choice(["ノート パソコン", "ボール ペン", "マウス パッド"]),
                                                  f"架空県見本市本町{i}-{r.randint(1, 9)}") for i in range(60)]), False,
        kind="headerless")
    add("neg_romaji_orders.csv", csv_of([("JUCHU_NO", "JUCHU_BI", "SHOHIN_CD", "SHOHIN_MEI", "SURYO", "TANKA")] + [
        (valid_only(r, lambda: digits(r, 12)) if i % 9 == 0 else digits(r, 12), f"2026{r.randint(1, 12):02d}{r.randint(1, 28):02d}",
         digits(r, 8), r.choice(["ボールペン", "コピー用紙", "封筒"]), r.randint(1, 50), r.randint(100, 9999))
        for i in range(150)]), False, kind="header variant")
    # a register pasted from a spreadsheet into the body without its header row (tab-separated); an
    # order list and a job log pasted the same way are no register
    pasted = [f"{p['name']}\t{p['address']}\t{p['birth']}\t{r.choice(['世帯主', '妻', '子'])}" for p in ppl[:22]]
    add("pos_pasted_headerless.eml", eml("お疲れ様です。昨日の分です。\n\n" + "\n".join(pasted) + "\n\nよろしくお願いします。"),
        True, 22, ("personal_records",), kind="headerless")
    orders_pasted = [f"{digits(r, 8)}\t2026/{r.randint(1, 12)}/{r.randint(1, 28)}\t{r.choice(['ノート パソコン', 'ボール ペン'])}"
                     f"\t架空県見本市本町{i}-{r.randint(1, 9)}\t{r.randint(1, 9)}" for i in range(40)]
    add("neg_pasted_orders.eml", eml("出荷予定です。\n" + "\n".join(orders_pasted)), False, kind="headerless")
    log = [f"2026-11-{r.randint(1, 28):02d} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}\tINFO\tbatch {digits(r, 6)} done"
           f"\t{r.randint(10, 9999)} ms\t{r.choice(['見本 太郎', '例示 花子'])}" for _ in range(80)]
    add("neg_pasted_job_log.eml", eml("夜間バッチの結果\n" + "\n".join(log)), False, kind="headerless")
    # a note typed under a register's header before its rows; labels written in brackets
    noted = ["氏名\t住所\t生年月日\t続柄", "（※住所は住民票記載のとおり。敬称略）"] + [
        f"{p['name']}\t{p['address']}\t{p['birth']}\t{r.choice(['世帯主', '妻', '子'])}" for p in ppl[:16]]
    add("pos_note_under_header.eml", eml("対象者一覧です。\n\n" + "\n".join(noted)), True, 16, ("personal_records",),
        kind="header variant")
    bracketed = [f"【氏名】{p['name']}\n【住所】{p['address']}\n【生年月日】{p['birth']}" for p in ppl[:9]]
    add("pos_bracket_labels.eml", eml("申請者情報\n\n" + "\n\n".join(bracketed)), True, 9, ("personal_records",),
        kind="forms")
    add("neg_bracket_tags.eml", eml("【重要】システム停止のお知らせ\n【日時】12月5日 22:00～\n【場所】架空県見本市本町1-2-3"
                                    "\n【連絡先】03-0000-0000\n【担当】総務課 見本"), False, kind="forms")
    # family-register fields (本籍, 筆頭者) and numbers public bodies give people (被保険者番号, 基礎年金番号)
    # beside a name: a handful of rows is a register; insurers' and suppliers' lists are not
    add("pos_domicile_list.csv", csv_of([("氏名", "本籍", "筆頭者")] + [
        (p["name"], f"架空県見本市本町{i}番地", p["name"]) for i, p in enumerate(ppl[:5], 1)]), True, 5,
        ("personal_records",), kind="header variant")
    add("pos_insured_list.csv", csv_of([("被保険者番号", "氏名", "性別")] + [
        (digits(r, 8), p["name"], r.choice(["男", "女"])) for p in ppl[:8]]), True, 8, ("personal_records",),
        kind="header variant")
    add("neg_insurers.csv", csv_of([("保険者番号", "保険者名", "郵便番号", "所在地", "電話番号")] + [
        (digits(r, 8), f"見本健康保険組合{i}", f"{r.randint(100, 999)}-{r.randint(1000, 9999)}", f"架空県見本市本町{i}-1",
         f"03-0000-{i:04d}") for i in range(25)]), False, kind="suppliers")
    # headerless lists that look like people and are not: companies written as two words (株式会社 見本商事,
    # 見本電機 御中) beside their addresses, and public buildings beside the dates they were built
    add("neg_headerless_companies.csv", csv_of([(f"{r.choice(['株式会社', '有限会社'])} {w}{k}" if i % 2 else f"{w}{k} 御中",
                                                 f"架空県見本市本町{i}-1-2", f"03-0000-{i:04d}") for i, (w, k) in enumerate(
        (w, k) for w in ["見本", "例示", "架空", "試験", "模擬", "標本", "検証", "仮名"] for k in ["商事", "電機", "物流"]
    )]), False,
        kind="headerless")
    add("neg_headerless_buildings.csv", csv_of([(f"見本{r.choice(['小学校', '公民館', '市営住宅', '体育館'])}{i}号棟",
                                                 f"架空県見本市本町{i}-{r.randint(1, 9)}",
                                                 f"{r.randint(1960, 2015)}/{r.randint(1, 12):02d}/{r.randint(1, 28):02d}",
                                                 f"{r.randint(200, 9000)}㎡") for i in range(30)]), False, kind="headerless")
    # a mailing list pasted into a body (name, honorific, address per line); a letter addressed to a
    # few companies' people and a notice to customers are no list
    listed = [f"{i}. {p['name']} 様　{p['address']}" for i, p in enumerate(ppl[:14], 1)]
    add("pos_mailing_list.eml", eml("年賀状の発送先です。\n\n" + "\n".join(listed)), True, 14, ("personal_records",),
        kind="sentences")
    add("neg_letter_honorifics.eml", eml("見本商事株式会社\n営業部 例示 花子 様\n\nいつもお世話になっております。\n"
                                         "皆様におかれましては…。お客様各位には様式第3号をお送りします。\n"
                                         "〒100-0001 架空県見本市本町1-2-3 見本電機 様\n架空物流 御中 架空県見本市緑町4-5\n"
                                         "見本 太郎 様（ご注文番号 20261202）"), False, kind="sentences")
    # identifiers without a check digit, told by their shape after a keyword: a passport and a residence
    # card in a foreign resident's case mail; the same shapes as part numbers in an order are nothing
    add("pos_passport_residence_card.eml", eml(f"転入手続きの件です。\n旅券番号：TK{digits(r, 7)}\n"
                                               f"在留カード番号：AB{digits(r, 8)}CD\nよろしくお願いします。"),
        True, None, ("passport", "residence_card"), kind="keyed")
    add("pos_pension_numbers.csv", csv_of([("基礎年金番号", "受付日")] + [
        (f"{digits(r, 4)}-{digits(r, 6)}", "2026/11/01") for _ in range(6)]), True, None, ("pension_number",),
        kind="keyed")
    add("neg_part_codes.eml", eml("部品の発注です。\n" + "\n".join(
        f"品番 TK{digits(r, 7)} 数量 {r.randint(1, 9)}　型式 AB{digits(r, 8)}CD" for _ in range(20))), False, kind="keyed")
    # an HTML mail whose register sits in <pre> (tab-separated lines, as a client pastes plain text)
    pre = "\n".join(["氏名\t生年月日\t住所"] + [f"{p['name']}\t{p['birth']}\t{p['address']}" for p in ppl[:13]])
    add("pos_html_pre_register.eml", eml("", html_body=f"<html><body><p>一覧です</p><pre>{html.escape(pre)}</pre></body></html>"),
        True, 13, ("personal_records",), kind="html")
    # My Numbers parted by no-break spaces (pasted from Word or a web page) and by zero-width spaces
    nbsp = [my_number(r) for _ in range(3)]
    add("pos_mn_invisible_separators.eml", eml("個人番号の確認です。\n" + "\n".join(
        f"{p['name']}　個人番号 {n[:4]}{sep}{n[4:8]}{sep}{n[8:]}" for p, n, sep in zip(ppl, nbsp, ["\u00a0", "\u200b", "\u2009"], strict=False))),
        True, None, ("my_number",), kind="my number")
    add("neg_legacy_orders.doc", lf.doc_bytes(["受注一覧"], [("注文番号", "金額")] + [
        (valid_only(r, lambda: digits(r, 12)), "1200") for _ in range(4)]), False, kind="doc")
    return cases


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Outcome:
    held: bool  # verdict hold/reject for one external recipient
    content: bool  # held by a content finding (not only an unscannable part)
    records: int
    detectors: frozenset[str]


def judge(case: BizCase) -> Outcome:
    """The verdict `dlpgate scan` gives this file (an .eml by its content, anything else as one attachment)."""
    from dlpgate.extract import extract_file, extract_message
    from dlpgate.extract.sniff import sniff
    from dlpgate.policy import MessageFacts, Policy
    from dlpgate.scan.scanner import Scanner

    scanner, policy = _loaded(Scanner, Policy)
    if case.name.endswith(".eml") or sniff(case.data, case.name) == "eml":
        ex = extract_message(case.data)
    else:
        ex = extract_file(case.name, case.data)
    facts = MessageFacts(sender="staff@example.jp", recipients=("someone@example.com",), subject=ex.subject,
                         attachments=ex.attachments)
    result = scanner.scan_extraction(ex)
    verdict = policy.decide(result, facts)
    content = tuple(f for f in result.findings if f.detector != "unscannable")
    held = verdict.action in ("hold", "reject")
    content_held = held and policy.decide(type(result)(findings=content, records=result.records), facts).action in (
        "hold", "reject")
    return Outcome(held, content_held, result.records, frozenset(f.detector for f in result.findings))


_CACHE: dict[str, object] = {}


def _loaded(scanner_cls: type, policy_cls: type) -> tuple:  # type: ignore[type-arg]
    if "s" not in _CACHE:
        _CACHE["s"] = scanner_cls.load()
        _CACHE["p"] = policy_cls.load(None, ("example.jp",))
    return _CACHE["s"], _CACHE["p"]


def report(cases: list[BizCase]) -> dict[str, object]:
    pos = [c for c in cases if c.leak]
    neg = [c for c in cases if not c.leak]
    outcomes = {c.name: judge(c) for c in cases}
    held = [c.name for c in pos if outcomes[c.name].held]
    content = [c.name for c in pos if outcomes[c.name].content]
    false_holds = [c.name for c in neg if outcomes[c.name].held]
    judged = [c for c in cases if c.records is not None]
    exact = [c.name for c in judged if outcomes[c.name].records == c.records]
    musts = [c for c in cases if c.must]
    must_ok = [c.name for c in musts if c.must <= outcomes[c.name].detectors]
    return {
        "cases": len(cases), "positives": len(pos), "negatives": len(neg),
        "recall_held": f"{len(held)}/{len(pos)}", "recall_by_content": f"{len(content)}/{len(pos)}",
        "false_holds": f"{len(false_holds)}/{len(neg)}", "exact_records": f"{len(exact)}/{len(judged)}",
        "detectors_found": f"{len(must_ok)}/{len(musts)}",
        "missed": sorted(c.name for c in pos if not outcomes[c.name].content),
        "false_held": sorted(false_holds),
        "records_wrong": sorted(f"{c.name}: {outcomes[c.name].records} (want {c.records})" for c in judged
                                if c.name not in exact),
        "detectors_missing": sorted(f"{c.name}: {sorted(c.must - outcomes[c.name].detectors)}" for c in musts
                                    if c.name not in must_ok),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", help="also write every case file here")
    args = ap.parse_args()
    cases = build()
    if args.dir:
        out = Path(args.dir)
        out.mkdir(parents=True, exist_ok=True)
        for c in cases:
            (out / c.name).write_bytes(c.data)
    print(json.dumps(report(cases), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
