"""A realistic dense business-mail corpus: the numbers ordinary office mail is full of.

Order, invoice and tracking numbers, 13-digit corporate numbers (法人番号, with their check digit),
phone and fax numbers, postal codes, dates, amounts, bank account numbers, quantities and item
codes, in Japanese and English sentences: a digit run every few dozen characters (the generator
prints the measured density). A few My Numbers are planted (with and without a keyword) so the
scanner has real work to do, at a rate like a real archive's (about 1 in 2,000 lines).

    python benchmarks/dense_corpus.py --mb 5      # prints the density figures and a sample
"""

from __future__ import annotations

import argparse
import random
import re

from dlpgate.scan.checks import my_number_check_digit

COMPANIES = ["株式会社見本商事", "例示物産株式会社", "サンプル運輸株式会社", "架空電機株式会社", "Example Trading Co., Ltd.",
             "有限会社試験工業", "模擬建設株式会社", "Dummy Logistics K.K."]
ITEMS = ["A4コピー用紙", "トナーカートリッジ", "ノートPC", "会議用テーブル", "LED照明", "段ボール箱", "USBメモリ 64GB",
         "office chairs", "network switch", "printer paper"]
BANKS = ["みずほ銀行 本店営業部", "三菱UFJ銀行 丸の内支店", "三井住友銀行 東京営業部", "ゆうちょ銀行 〇一八店"]
PHRASES = ["いつもお世話になっております。", "ご確認のほどよろしくお願いいたします。", "下記のとおりご連絡いたします。",
           "ご不明な点がございましたらお問い合わせください。", "Please find the details below.",
           "Thank you for your order.", "引き続きよろしくお願い申し上げます。", "以上、よろしくお願いいたします。"]


def corporate_number(r: random.Random) -> str:
    """13 digits: a check digit (9 - sum of weighted digits mod 9) then 12 digits."""
    body = [r.randrange(10) for _ in range(12)]
    total = sum(d * (1 if i % 2 == 0 else 2) for i, d in enumerate(reversed(body)))
    return str(9 - total % 9) + "".join(map(str, body))


def my_number(r: random.Random) -> str:
    body = "".join(str(r.randrange(10)) for _ in range(11))
    return body + str(my_number_check_digit(body))


def _date(r: random.Random) -> str:
    y, m, d = r.randint(2018, 2025), r.randint(1, 12), r.randint(1, 28)
    return r.choice([f"{y}年{m}月{d}日", f"{y}/{m:02d}/{d:02d}", f"{y}-{m:02d}-{d:02d}", f"令和{y - 2018}年{m}月{d}日"])


def _amount(r: random.Random) -> str:
    v = r.randint(1, 9_999_999)
    return r.choice([f"{v:,}円", f"¥{v:,}", f"{v}円（税込）", f"USD {v / 100:,.2f}"])


def line(r: random.Random) -> str:
    k = r.random()
    if k < 0.0005:
        return f"マイナンバー：{my_number(r)}"
    if k < 0.001:
        n = my_number(r)
        return f"確認番号 {n[:4]} {n[4:8]} {n[8:]}"
    c = r.choice(COMPANIES)
    # (weight, line): prose with short numbers most of the time, a long number (corporate number,
    # JAN code, tracking or invoice number) in about one line in ten, as in an ordinary order mail
    templates = [
        (8, lambda: f"注文番号：PO-{r.randint(2018, 2025)}-{r.randint(100000, 999999)}　納期：{_date(r)}　数量：{r.randint(1, 500)}個"),
        (2, lambda: f"請求書番号 INV{r.randint(10**9, 10**10 - 1)} の金額は{_amount(r)}です。お支払期限は{_date(r)}です。"),
        (5, lambda: f"お問い合わせ番号（追跡番号）：{r.randint(1000, 9999)}-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}"),
        (2, lambda: f"{c}（法人番号 {corporate_number(r)}）"),
        (8, lambda: f"TEL 0{r.randint(3, 99)}-{r.randint(100, 9999)}-{r.randint(1000, 9999)}　FAX 0{r.randint(3, 99)}-{r.randint(100, 9999)}-{r.randint(1000, 9999)}"),
        (6, lambda: f"〒{r.randint(100, 999)}-{r.randint(1000, 9999)} 東京都千代田区丸の内{r.randint(1, 3)}-{r.randint(1, 9)}-{r.randint(1, 20)}"),
        (4, lambda: f"振込先：{r.choice(BANKS)} 普通 {r.randint(1000000, 9999999)} 口座名義 {c}"),
        (8, lambda: f"品番 {r.choice('ABCDEFGH')}{r.randint(10000, 99999)}-{r.randint(10, 99)} {r.choice(ITEMS)} 単価{_amount(r)} × {r.randint(1, 99)}"),
        (2, lambda: f"Order #{r.randint(10**7, 10**8 - 1)} shipped on {_date(r)}, tracking {r.randint(10**11, 10**12 - 1)}."),
        (8, lambda: f"見積書No.{r.randint(10000, 99999)}（有効期限 {_date(r)}）合計 {_amount(r)}"),
        (10, lambda: f"会議は{_date(r)} {r.randint(9, 17)}:{r.choice(['00', '30'])}から第{r.randint(1, 12)}会議室で行います。"),
        (2, lambda: f"JANコード {r.randint(10**12, 10**13 - 1)} / 数量 {r.randint(1, 999)}"),
        (35, lambda: r.choice(PHRASES) + " " + r.choice(PHRASES)),
    ]
    pick = r.random() * sum(w for w, _ in templates)
    for weight, make in templates:
        pick -= weight
        if pick < 0:
            return make()
    return templates[-1][1]()


def corpus(total_bytes: int, seed: int = 20261202) -> str:
    r = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < total_bytes:
        text = line(r)
        out.append(text)
        size += len(text.encode()) + 1
    return "\n".join(out)


_RUN = re.compile(r"[0-9０-９]{2,}")


def density(text: str) -> tuple[int, float]:
    """(digit runs of 2+ digits, characters per run)."""
    runs = len(_RUN.findall(text))
    return runs, len(text) / max(runs, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=5.0)
    args = ap.parse_args()
    text = corpus(int(args.mb * 1_000_000))
    runs, per = density(text)
    print(f"{len(text.encode()) / 1e6:.1f} MB, {len(text):,} chars, {runs:,} digit runs: one every {per:.0f} chars")
    print("\n".join(text.splitlines()[:12]))


if __name__ == "__main__":
    main()
