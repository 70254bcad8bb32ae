"""The table analysis's fast paths give what folding every cell gives (issue 19).

TableAnalyser.analyse remembers each cell's judgement for the table (tables._Cells) and passes a
sheet whose first rows name nothing with one keyword search over normalize.fold_cover of their
text; `analyse(table, memo=False)` folds every cell at every look, as before. Both are compared on
generated sheets: registers with their header anywhere in the first rows, headerless lists, forms
down a column, keyword columns, business sheets, in the cells' every spelling (half-width kana,
full-width letters, blanks, brackets, numbering, combining marks), as tuples and as `Rows`."""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlpgate.extract.model import RowsBuilder, Table
from dlpgate.scan.normalize import fold, fold_cover
from dlpgate.scan.scanner import Scanner
from dlpgate.scan.tables import TableAnalyser

RULES = Scanner.load(engine="re").rules
ANALYSER = TableAnalyser(RULES)
KEYWORDS = sorted({w for g in RULES.record_fields for w in g.keywords} | set(RULES.my_number_keywords)
                  | set(RULES.card_keywords) | set(RULES.resident_keywords) | set(RULES.licence_keywords))
ID_KEYWORDS = sorted(set(RULES.my_number_keywords) | set(RULES.card_keywords) | set(RULES.resident_keywords)
                     | set(RULES.licence_keywords))
# characters that fold changes, removes or joins: blanks, brackets, numbering, dashes and the long
# mark, half-width kana and voiced marks, full-width letters, circled and parenthesised numbers
TRICKY = (" ", "\u3000", "\u00a0", "(", ")", "（", "）", "【", "】", "[", "]", "<", ">", "「", "」", "-", "_", ".", "#",
          ":", "ー", "ｰ", "－", "1", "１", "①", "⑴", "㈱", "ｶ", "ﾞ", "ﾟ", "\u3099", "\u0301", "Ａ", "ｍ", "Y", "氏", "名",
          "住", "所", "番", "号", "\u2028", "\x1c", "\r", "\f", "\u200b", "\u00ad", "\u2009", "\ufeff")
WORDS = ("部品", "A12345", "数量", "単価", "2024/3/5", "1,234", "123456789012", "山田 太郎", "架空市本町1-2-3",
         "1970/01/02", "昭和45年3月2日", "ヤマダ タロウ", "札幌 支店", "備考", "No", "(漢字)", "（西暦）", "合計", "※ 取扱注意",
         "", " ", "1234-5678-9012", "男", "世帯主")


_HALF = {unicodedata.normalize("NFKC", chr(c)): chr(c) for c in range(0xFF66, 0xFF9E)}


BLANKS = ("\u3000", " ", "\u00a0", "\r", "\f", "\x1c", "\u2028", "\u200b", "\u2009")


def _spelling(word: str, how: int, blank: str = "\u3000") -> str:
    """A keyword as a sheet may spell it: numbered, wrapped or qualified in brackets, cut by a blank
    or by a bracketed note (both of which a fold removes, joining the halves), in capitals, in
    half-width katakana."""
    if how == 1:
        return word + "１"
    if how == 2:
        return f"【{word}】"
    if how == 3:
        return f"{word}（必須）"
    if how == 4 and len(word) >= 2:
        return word[0] + blank + word[1:]
    if how == 5:
        return word.upper()
    if how == 6 and len(word) >= 2:
        return word[0] + "(注)" + word[1:]
    if how == 7:
        return "".join(_HALF.get(c, c) for c in word)
    return word


@st.composite
def cells(draw: st.DrawFn, keywords: bool = True) -> str:
    kind = draw(st.integers(0 if keywords else 2, 11))
    if kind <= 1:
        return _spelling(draw(st.sampled_from(KEYWORDS)), draw(st.integers(0, 7)), draw(st.sampled_from(BLANKS)))
    if kind <= 6:
        return draw(st.sampled_from(WORDS))
    return "".join(draw(st.lists(st.sampled_from(TRICKY + tuple(KEYWORDS)), max_size=6)))


@st.composite
def sheets(draw: st.DrawFn) -> list[tuple[str, ...]]:
    width = draw(st.integers(1, 6))
    words = cells(keywords=draw(st.booleans()))  # without keywords in the body, the header alone names fields
    body = draw(st.lists(st.lists(words, min_size=width, max_size=width).map(tuple), min_size=0, max_size=30))
    if draw(st.booleans()):  # a header somewhere in the first rows, perhaps over two rows
        how, blank = draw(st.integers(0, 7)), draw(st.sampled_from(BLANKS))
        header = tuple(_spelling(w, how, blank) for w in draw(st.lists(st.sampled_from(KEYWORDS), min_size=width, max_size=width)))
        at = draw(st.integers(0, len(body)))
        body[at:at] = [header] + ([tuple(draw(st.lists(words, min_size=width, max_size=width)))]
                                  if draw(st.booleans()) else [])
    if draw(st.booleans()):  # an identifier keyword over a column of numbers, no personal header
        how, blank = draw(st.integers(0, 7)), draw(st.sampled_from(BLANKS))
        keyword = _spelling(draw(st.sampled_from(ID_KEYWORDS)), how, blank)
        numbers = st.sampled_from(("123456789018", "4111 1111 1111 1111", "1234-5678-9012", "部品", ""))
        at = draw(st.integers(0, len(body)))
        body[at:at] = [(draw(st.sampled_from(WORDS)), keyword, "備考")] + [
            (draw(st.sampled_from(WORDS)), draw(numbers), draw(numbers)) for _ in range(draw(st.integers(0, 5)))]
    if draw(st.booleans()):  # a form: labels down the first column, values beside them
        body += [(draw(st.sampled_from(KEYWORDS)), draw(st.sampled_from(WORDS))) for _ in range(draw(st.integers(0, 8)))]
    return body


def _as_rows(rows: list[tuple[str, ...]]) -> Table:
    builder = RowsBuilder()
    for row in rows:
        builder.add(row)
    return Table("t.xlsx/Sheet1", builder.build()[1])


def _facts(analyser: TableAnalyser, table: Table, memo: bool) -> object:
    facts = analyser.analyse(table, memo=memo)
    if facts is None:
        return None
    return (facts.records, facts.fields, facts.header_row, dict(facts.column_context), facts.joined)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sheets())
def test_remembered_and_covered_judgements_give_what_folding_every_cell_gives(rows: list[tuple[str, ...]]) -> None:
    slow = _facts(ANALYSER, Table("t", tuple(rows)), memo=False)
    assert _facts(ANALYSER, Table("t", tuple(rows)), memo=True) == slow
    assert _facts(ANALYSER, _as_rows(rows), memo=True) == slow
    assert _facts(ANALYSER, _as_rows(rows), memo=False) == slow


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.lists(cells(), min_size=1, max_size=5), min_size=1, max_size=8))
def test_the_cover_holds_every_cells_fold(rows: list[list[str]]) -> None:
    rows = [[c.replace("\t", "").replace("\n", "") for c in row] for row in rows]
    cover = fold_cover("\n".join("\t".join(row) for row in rows))
    if cover is not None:
        for row in rows:
            for cell in row:
                assert fold(cell) in cover, cell


def test_a_business_sheet_is_passed_over_and_a_register_is_not() -> None:
    business = [("品番", "品名", "数量", "単価", "金額", "納期")] + [
        (f"A{10000 + k}", f"部品{k}", str(k % 9 + 1), "1200", str(1200 * (k % 9 + 1)), "2024/3/5") for k in range(300)]
    assert ANALYSER._names_nothing(_as_rows(business).rows)
    assert ANALYSER.analyse(_as_rows(business)) is None
    register = [("番号", "氏名", "住所", "個人番号")] + [
        (str(k), f"山田 太郎{k}", f"架空市本町{k}-2-3", "123456789018") for k in range(50)]
    assert not ANALYSER._names_nothing(_as_rows(register).rows)
    facts = ANALYSER.analyse(_as_rows(register))
    assert facts is not None and facts.records == 50
    assert facts == ANALYSER.analyse(_as_rows(register), memo=False)
    # a name column 150 rows down is still in the first 200 rows: not passed over
    late = business[:150] + [("氏名", "住所", "生年月日")] + [("山田 太郎", "架空市本町1-2-3", "1970/01/02")] * 5
    assert not ANALYSER._names_nothing(_as_rows(late).rows)
    assert ANALYSER.analyse(_as_rows(late)) == ANALYSER.analyse(_as_rows(late), memo=False)
    assert ANALYSER.analyse(_as_rows(late)) is not None
    # a bracket anywhere: each cell is folded (`氏(漢字)名` folds to 氏名)
    assert fold_cover("品番\t氏(漢字)名") is None
