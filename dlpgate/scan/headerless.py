"""A register exported without its header row: `山田 太郎,架空市本町1-2-3,1970/01/02` on every line.

With no header there are no field names to read, but the cells still say what they are: a
column of personal names (surname, a blank, given name), a column of home addresses (a town word
and a block number), a column of dates spread over decades (birth dates; an order export's dates
fall within a year or two). A table in which most rows hold a name beside an address or a birth
date is a list of people (addresses beside dates alone are as often a list of buildings and the
dates they were built) — names and addresses that differ row to
row (a column repeating 会議 室 or one venue is no one's name or home). Only the first rows are
sampled, and a column stops at its first misses too many, so a business sheet without a personal
header costs a few hundred regex tests.

Such a register also reaches mail bodies: cells copied out of a spreadsheet and pasted into the
text land as tab-separated lines (`tab_blocks`), with no header when only the people were selected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from dlpgate.scan.prose import ADDRESS, ORGANISATION

# Consecutive lines pasted from a spreadsheet, each holding a tab: matched only where a tab was
# found (str.find), from its line's start, so a large text with one stray tab costs nothing more.
_TAB_LINES = re.compile(r"(?:[^\n\t]*+\t[^\n]*+(?:\n|\Z))+")

# surname, a blank, given name: in kanji (given names may be kana), or both in katakana. A kana
# name alone with an address is too weak (ノート パソコン beside a delivery address): it needs a
# birth date. Places and units written the same way (札幌 支店, 総務 課) are not names.
_NAME = re.compile(r"[一-龥々〆ヶ]{1,5}[ \u3000]+[一-龥々〆ヶぁ-んァ-ヴー]{1,5}")
_KANA_NAME = re.compile(r"[ァ-ヴー]{2,8}[ \u3000]+[ァ-ヴー]{1,8}")
_NOT_A_NAME = ("支店", "本店", "本社", "支社", "営業所", "事務所", "出張所", "工場", "店", "課", "部", "室", "係",
               "局", "所", "園", "校", "館", "署", "センター", "センタ-", "会", "組", "線", "駅", "町", "市", "区", "村")

_WESTERN = re.compile(r"((?:19|20)\d\d)\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}日?")
_ERA = re.compile(r"(明治|大正|昭和|平成|令和|[MTSHR])\s*(\d{1,2}|元)\s*[年./]\s*\d{1,2}\s*[月./]\s*\d{1,2}日?")
_ERA_START = {"明治": 1867, "M": 1867, "大正": 1911, "T": 1911, "昭和": 1925, "S": 1925, "平成": 1988, "H": 1988,
              "令和": 2018, "R": 2018}
SAMPLE = 60  # rows looked at: enough to tell a column, cheap on every sheet without a header
MIN_ROWS = 5  # fewer rows say too little about a column
SHARE = 0.8  # of a column's sampled cells must look alike
MIN_YEARS, MIN_SPAN = 4, 15  # birth dates: at least this many distinct years, this far apart
MAX_ADDRESS = 80
DISTINCT = 0.5  # of a name or address column's cells differ from each other


_ORGANISATION = re.compile(ORGANISATION)


def _is_name(cell: str) -> bool:
    return (_NAME.fullmatch(cell) is not None and not cell.endswith(_NOT_A_NAME)
            and _ORGANISATION.search(cell) is None)


def _year(cell: str) -> int | None:
    m = _WESTERN.fullmatch(cell)
    if m is not None:
        return int(m.group(1))
    m = _ERA.fullmatch(cell)
    if m is not None:
        return _ERA_START[m.group(1)] + (1 if m.group(2) == "元" else int(m.group(2)))
    return None


def _address(cell: str) -> bool:
    return len(cell) <= MAX_ADDRESS and ADDRESS.search(cell) is not None


def _mostly(cells: Sequence[str], test: Callable[[str], object], need: float) -> bool:
    """Whether at least `need` of `cells` pass `test`; stops at the first miss too many (a business
    sheet's columns fail within a few cells, so the sample costs little)."""
    misses = len(cells) - need
    for cell in cells:
        if not test(cell):
            misses -= 1
            if misses < 0:
                return False
    return True


def people_columns(rows: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The field groups ("name", "address", "birth_date") whose columns a headerless table holds,
    when they make it a list of people (see the module doc); () otherwise."""
    sample = [[c.strip() for c in row] for row in rows[:SAMPLE]]
    sample = [row for row in sample if any(row)]
    if len(sample) < MIN_ROWS:
        return ()
    width = max(map(len, sample))
    need = SHARE * len(sample)
    found: set[str] = set()
    for c in range(min(width, 40)):
        cells = [row[c] for row in sample if len(row) > c and row[c]]
        if len(cells) < need or len(set(cells)) < DISTINCT * len(cells):
            continue  # people's names and homes differ row to row (a venue, a section repeat)
        if "name" not in found and _mostly(cells, _is_name, need):
            found.add("name")
        elif "kana" not in found and _mostly(cells, _KANA_NAME.fullmatch, need):
            found.add("kana")
        elif "address" not in found and _mostly(cells, _address, need):
            found.add("address")
        elif "birth_date" not in found and _mostly(cells, _year, need):
            years = [y for y in map(_year, cells) if y is not None]
            if len(set(years)) >= MIN_YEARS and max(years) - min(years) >= MIN_SPAN:
                found.add("birth_date")
    if "kana" in found:  # a kana name counts beside a birth date only
        found.discard("kana")
        if "birth_date" in found:
            found.add("name")
    if len(found) < 2 or "name" not in found:
        return ()  # addresses beside dates alone are as often buildings and their construction dates
    return tuple(g for g in ("name", "address", "birth_date") if g in found)


def tab_blocks(text: str) -> list[tuple[int, int]]:
    """The spans of the runs of MIN_ROWS or more consecutive tab-holding lines in `text`: one
    find per run and one C-level match over it (6.7 MB of TSV: ~10 ms; of three-line runs: ~20 ms)."""
    out = []
    find, rfind, count = text.find, text.rfind, text.count
    pos = find("\t")
    while pos >= 0:
        start = rfind("\n", 0, pos) + 1
        m = _TAB_LINES.match(text, start)
        end = m.end() if m is not None else pos + 1
        if m is not None and count("\n", start, end) + (not text.endswith("\n", start, end)) >= MIN_ROWS:
            out.append((start, end))
        pos = find("\t", end)
    return out


def tab_rows(text: str, start: int, end: int, limit: int | None = None) -> tuple[tuple[str, ...], ...]:
    """The rows of a tab block (cells split at tabs), the first `limit` of them if given."""
    lines = text[start:end].splitlines() if limit is None else text[start:end].split("\n", limit)[:limit]
    return tuple(tuple(line.rstrip("\r").split("\t")) for line in lines)
