"""Generate the labelled scanner corpus (synthetic, deterministic).

    .venv/bin/python tests/corpus/generate.py      # rewrites tests/corpus/cases/ and labels.json

Every case is a small text file; labels.json maps its name to the findings the default rules must
produce, as sorted "detector:severity" strings ([] for a hard negative). Numbers are generated
(valid check digits computed here), never taken from real people.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from dlpgate.scan.checks import luhn_valid, my_number_check_digit  # noqa: E402

FW = str.maketrans("0123456789", "０１２３４５６７８９")


def my_number(r: random.Random) -> str:
    body = "".join(str(r.randint(0, 9)) for _ in range(11))
    return body + str(my_number_check_digit(body))


def invalid_my_number(r: random.Random) -> str:
    n = my_number(r)
    return n[:11] + str((int(n[11]) + 1 + r.randint(0, 8)) % 10)


def card(r: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(str(r.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError


def jan(r: random.Random) -> str:
    body = "49" + "".join(str(r.randint(0, 9)) for _ in range(10))
    s = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - s % 10) % 10)


def grouped(n: str, sep: str) -> str:
    return sep.join((n[:4], n[4:8], n[8:]))


def build() -> dict[str, tuple[str, list[str]]]:
    r = random.Random(20240912)
    cases: dict[str, tuple[str, list[str]]] = {}

    def add(name: str, text: str, labels: list[str]) -> None:
        assert name not in cases, name
        cases[name] = (text, sorted(labels))

    # ---- my_number positives (every form)
    filler = "いつもお世話になっております。市民課の試験です。"
    for i, sep in enumerate([" ", "-", "‐", "−", "－", "ー", ".", "　"]):
        add(f"pos_mn_sep_{i}", f"{filler}\n照会番号 {grouped(my_number(r), sep)} をご確認ください。", ["my_number:medium"])
    for i, kw in enumerate(["マイナンバー", "個人番号", "共通番号", "個人番号カード", "通知カード", "My Number",
                            "Individual Number", "ＭＹ　ＮＵＭＢＥＲ"]):
        add(f"pos_mn_kw_{i}", f"{filler}\n{kw}：{my_number(r)}\nよろしくお願いします。", ["my_number:high"])
    add("pos_mn_kw_after", f"{my_number(r)}（上記は本人の個人番号です）", ["my_number:high"])
    add("pos_mn_kw_far_before", "個人番号の提出について" + "。" * 90 + my_number(r), ["my_number:high"])
    add("pos_mn_fullwidth", f"番号：{my_number(r).translate(FW)} です", ["my_number:low"])
    add("pos_mn_fullwidth_kw", f"マイナンバー {grouped(my_number(r), 'ー').translate(FW)}", ["my_number:high"])
    add("pos_mn_contiguous", f"照会 {my_number(r)} の件", ["my_number:low"])
    add("pos_mn_beside_kanji", f"番号{my_number(r)}番", ["my_number:low"])
    add("pos_mn_three_distinct", "\n".join(f"{i}. {my_number(r)}" for i in range(3)), ["my_number:high"])
    add("pos_mn_keyword_beats_tel", f"TEL 03-1111-2222 個人番号 {my_number(r)}", ["my_number:high"])
    add("pos_mn_cp932_style_dash", f"個人番号 {grouped(my_number(r), '−')}", ["my_number:high"])

    # ---- other detectors
    add("pos_resident", f"住民票コード：{''.join(str(r.randint(0, 9)) for _ in range(11))}", ["resident_code:high"])
    add("pos_resident_after", f"{''.join(str(r.randint(1, 9)) for _ in range(11))} (住民票コード)", ["resident_code:high"])
    visa = card(r, "4", 16)
    add("pos_card_visa", "お支払い: " + " ".join(visa[i:i + 4] for i in range(0, 16, 4)), ["credit_card:medium"])
    add("pos_card_kw", f"カード番号 {card(r, '53', 16)}", ["credit_card:high"])
    amex = card(r, "37", 15)
    add("pos_card_amex", f"Card number: {amex[:4]}-{amex[4:10]}-{amex[10:]}", ["credit_card:high"])
    add("pos_card_jcb", f"決済 {card(r, '3540', 16)}", ["credit_card:medium"])
    add("pos_licence", f"運転免許証番号：{''.join(str(r.randint(0, 9)) for _ in range(12))}", ["drivers_licence:high"])
    add("pos_label_high", "【機密性３】\n本資料の取扱いに注意してください。", ["label:high"])
    add("pos_label_high2", "極秘\n次期計画について", ["label:high"])
    add("pos_label_low", "機密性2情報\n会議資料です。", ["label:low"])
    add("pos_label_low2", "部外秘 資料一覧", ["label:low"])
    add("pos_label_mixed", "取扱注意\n秘密文書", ["label:high"])

    # ---- personal records (tab / comma blocks in text)
    def roster(n: int, delim: str, title: bool = False, mn: bool = False) -> str:
        head = ["氏名", "フリガナ", "住所", "生年月日"] + (["個人番号"] if mn else [])
        rows = [delim.join(head)]
        for i in range(n):
            row = [f"試験 花子{i}", "シケン ハナコ", f"架空県架空市{i}-1", f"1980/01/{i % 28 + 1:02d}"]
            if mn:
                row.append(my_number(r))
            rows.append(delim.join(row))
        return ("令和6年度 対象者名簿\n\n" if title else "") + "\n".join(rows)

    add("pos_records_tab_5", roster(5, "\t"), ["personal_records:medium"])
    add("pos_records_csv_12", roster(12, ","), ["personal_records:medium"])
    add("pos_records_title_150", roster(150, "\t", title=True), ["personal_records:high"])
    add("pos_records_mn_column", roster(2, "\t", mn=True), ["my_number:high", "personal_records:medium"])
    add("pos_records_with_label", "機密性3\n" + roster(3, ","), ["label:high", "personal_records:medium"])

    # ---- hard negatives
    for i in range(6):
        add(f"neg_invalid_check_{i}", f"番号 {invalid_my_number(r)} の件", [])
    for i, label in enumerate(["注文番号", "請求番号", "伝票番号", "受付番号", "管理番号", "会員番号", "口座番号",
                               "電話", "TEL", "FAX", "お問い合わせ番号", "追跡番号"]):
        add(f"neg_label_{i}", f"{label}：{my_number(r)}", [])
    add("neg_label_spaced", f"注文番号（ご確認用）　{my_number(r)}", [])
    for i in range(4):
        add(f"neg_corporate_{i}", f"法人番号 {r.randint(1, 9)}{my_number(r)}", [])
        add(f"neg_jan_{i}", f"商品 {jan(r)} 入荷", [])
    add("neg_13_digits_keyword", f"個人番号 {my_number(r)}{r.randint(0, 9)}", [])
    add("neg_14_digits_sep", f"12-{grouped(my_number(r), '-')}", [])
    add("neg_4_4_4_4", f"シリアル {'-'.join(['1234', '5678', '9012', '3456'])}", [])
    add("neg_phone", "TEL 03-1234-5678 / 090-1234-5678 / 0120-123-456", [])
    add("neg_postal_dates", "〒100-0013 東京都千代田区霞が関1-2-3\n2024年9月12日（木）10:00", [])
    add("neg_amounts", "合計 1,234,567,890円 / 123,456,789,012円", [])
    add("neg_11_digits_no_kw", f"照会 {''.join(str(r.randint(0, 9)) for _ in range(11))}", [])
    bad = card(r, "4", 16)
    add("neg_card_luhn_fail", f"カード番号 {bad[:-1]}{(int(bad[-1]) + 5) % 10}", [])
    add("neg_card_no_brand", f"番号 {card(r, '9', 16)}", [])
    add("neg_label_like", "機密性の高い情報の取扱いについて研修を行います。", [])
    add("neg_header_one_field", "氏名\t所属\n試験 太郎\t総務課\n試験 花子\t市民課", [])
    add("neg_header_only", "氏名\t住所\t生年月日\n", [])
    add("neg_prose_fields", "氏名、住所、生年月日を記入のうえ提出してください。", [])
    add("neg_english", "Please send the invoice number and order date by Friday.", [])
    add("neg_licence_word_no_number", "運転免許証の更新手続きについて", [])
    add("neg_my_number_word_only", "マイナンバーカードの交付申請は窓口で受け付けます。", [])
    add("neg_digits_glued", f"ID{my_number(r)}{r.randint(0, 9)}", [])
    add("neg_decimal", f"値 {my_number(r)[:6]}.{my_number(r)[:6]}", [])
    return cases


def main() -> None:
    cases = build()
    out = HERE / "cases"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.txt"):
        old.unlink()
    for name, (text, _labels) in cases.items():
        (out / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    labels = {name: labels for name, (_t, labels) in sorted(cases.items())}
    (HERE / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    pos = sum(1 for v in labels.values() if v)
    print(f"{len(labels)} cases: {pos} positives, {len(labels) - pos} hard negatives")


if __name__ == "__main__":
    main()
