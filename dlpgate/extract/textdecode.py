"""Bytes -> str for Japanese mail: the declared charset when it is right, detection when it is not.

Shift_JIS is always read as CP932 (NEC/IBM extensions: ①, ㈱, ～ are what offices type).
ISO-2022-JP falls back to a CP50220-style decoder (JIS X 0208 rows mapped through CP932, half-width
katakana) because Python's iso2022_jp codecs refuse the NEC row-13 characters Windows mailers send.
A wrong or missing label (Shift_JIS labelled ISO-2022-JP is common) is detected; a part is never dropped:
the last resort decodes CP932 with replacement characters.
"""

from __future__ import annotations

import codecs
import functools
import re

_ALIASES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "ms_kanji": "cp932",
    "csshiftjis": "cp932", "windows-31j": "cp932", "cp932": "cp932", "ms932": "cp932", "x-ms-cp932": "cp932",
    "iso-2022-jp": "iso2022_jp", "csiso2022jp": "iso2022_jp", "iso-2022-jp-1": "iso2022_jp_1",
    "iso-2022-jp-2": "iso2022_jp_2", "iso-2022-jp-3": "iso2022_jp_3", "iso-2022-jp-2004": "iso2022_jp_2004",
    "cp50220": "iso2022_jp", "cp50221": "iso2022_jp", "cp50222": "iso2022_jp",
    "euc-jp": "euc_jp", "x-euc-jp": "euc_jp", "eucjp": "euc_jp", "cseucpkdfmtjapanese": "euc_jp",
    "utf-8": "utf-8", "utf8": "utf-8", "us-ascii": "ascii", "ascii": "ascii",
}
_SCORE_SAMPLE = 64 * 1024
# Charsets whose C decoder reads any buffer as it reads bytes; a view in another charset (a codec
# written in Python may want bytes' methods) is copied to bytes first.
_VIEW_CODECS = frozenset(("utf-8", "ascii", "cp932", "shift_jis", "euc_jp", "iso8859-1", "cp1252"))
_ESC_JIS = re.compile(rb"\x1b[$(][@BJIDQ]|\x1b\$\([BDQ]")


def utf16_without_bom(sample: bytes) -> str | None:
    """"utf_16_le" / "utf_16_be" when `sample` reads as UTF-16 written without a byte order mark (a
    tool's "Unicode text" export, a file cut from a longer one): in a table or a listing the tabs,
    digits, line ends and Latin letters put a NUL in one byte of many 2-byte units and almost never
    in the other, and the whole decodes strictly. Kanji-only prose has too few such units to tell: it
    stays unreadable (and held), never guessed."""
    return _utf16_without_bom(bytes(sample))  # of bytes, the same object; a bytearray is not hashable


@functools.lru_cache(maxsize=1)  # sniff's _looks_textual, then decode_text, ask about the same first 8 KiB
def _utf16_without_bom(sample: bytes) -> str | None:
    """utf16_without_bom's answer, remembered for the last sample."""
    n = len(sample) - len(sample) % 2
    if n < 32:
        return None
    even = sample[0:n:2].count(0)
    odd = sample[1:n:2].count(0)
    units = n // 2
    for codec, high, low in (("utf_16_le", odd, even), ("utf_16_be", even, odd)):
        if high * 5 >= units and low * 50 <= units:
            try:
                text = sample[:n].decode(codec)
            except UnicodeDecodeError:
                # a sample cut inside a surrogate pair ends badly: judge it without its last unit
                try:
                    text = sample[: n - 2].decode(codec)
                except UnicodeDecodeError:
                    return None
            # Almost any byte pairs decode: 16-bit integers of some binary format too. Text is
            # characters people write (ASCII, kana, kanji, full-width forms) and few controls.
            written = sum(1 for c in text if c in "\t\n\r" or " " <= c <= "~" or "\u3000" <= c <= "\u9fff"
                          or "\uff00" <= c <= "\uffef")
            return codec if written * 100 >= len(text) * 97 else None
    return None


def decode_text(data: bytes | memoryview, declared: str | None = None) -> str:
    """Decode `data`, trusting `declared` only if it decodes cleanly.

    `data` may be a view into a larger buffer (a message body where it lies in the message): the
    usual case -- a BOM, or the declared charset decoding cleanly -- decodes straight from it,
    without a copy of tens of megabytes; only detection and ISO-2022-JP take a bytes copy."""
    head = bytes(data[:8192])
    if head.startswith(codecs.BOM_UTF8):
        return str(memoryview(data)[3:], "utf-8", "replace")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return str(data, "utf-16", "replace")
    if b"\x00" in head:
        bomless = utf16_without_bom(head)
        if bomless is not None:
            return str(data, bomless, "replace")
    codec = _codec(declared)
    if codec is not None and not codec.startswith("iso2022_jp"):
        try:  # what .decode(codec) does, from a view as well
            return str(data if codec in _VIEW_CODECS else bytes(data), codec)
        except (UnicodeDecodeError, LookupError):
            pass
    whole = bytes(data)  # of a bytes object, that object
    if codec is not None and codec.startswith("iso2022_jp"):
        text = _iso2022(whole, codec)
        if text is not None:
            return text
    return detect_and_decode(whole)


def detect_and_decode(data: bytes) -> str:
    """Pick among the encodings Japanese mail really uses: ASCII/UTF-8, ISO-2022-JP, CP932, EUC-JP."""
    if b"\x1b" in data and _ESC_JIS.search(data):  # the memchr first: the regex costs 18 ms per 50 MB
        text = _strict(data, "iso2022_jp")
        if text is not None:
            return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    as_cp932 = _strict(data, "cp932")
    as_euc = _strict(data, "euc_jp")
    if as_cp932 is not None and as_euc is not None:
        return as_cp932 if _prefer_cp932(data, as_cp932, as_euc) else as_euc
    if as_cp932 is not None:
        return as_cp932
    if as_euc is not None:
        return as_euc
    best = _normalizer_guess(data)
    if best is not None:
        return best
    return data.decode("cp932", "replace")


def _codec(declared: str | None) -> str | None:
    if not declared:
        return None
    name = declared.strip().strip('"').lower()
    name = _ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _strict(data: bytes, codec: str) -> str | None:
    if codec.startswith("iso2022_jp"):
        return _iso2022(data, codec)
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _iso2022(data: bytes, codec: str) -> str | None:
    for attempt in (codec, "iso2022_jp_ext", "iso2022_jp_2"):
        try:
            return data.decode(attempt)
        except (UnicodeDecodeError, LookupError):
            continue
    return _cp50220(data)


_JIS_STATES = {b"\x1b(B": "ascii", b"\x1b(J": "ascii", b"\x1b$@": "jis", b"\x1b$B": "jis",
               b"\x1b(I": "kana", b"\x1b$(Q": "jis", b"\x1b$(O": "jis"}


def _cp50220(data: bytes) -> str | None:
    """ISO-2022-JP as Windows writes it: JIS X 0208 pairs (with NEC row 13 and IBM extensions) mapped
    to Shift_JIS and decoded as CP932; SO/SI and ESC ( I half-width katakana. None if malformed."""
    out: list[str] = []
    state = "ascii"
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == 0x1B:
            for esc, new_state in _JIS_STATES.items():
                if data.startswith(esc, i):
                    state = new_state
                    i += len(esc)
                    break
            else:
                return None
            continue
        if b == 0x0E:
            state = "kana"
            i += 1
            continue
        if b == 0x0F:
            state = "ascii"
            i += 1
            continue
        if b in (0x0A, 0x0D):
            out.append(chr(b))
            i += 1
            continue
        if state == "jis":
            if i + 1 >= n:
                return None
            sj = _jis_to_sjis(b, data[i + 1])
            if sj is None:
                return None
            try:
                out.append(sj.decode("cp932"))
            except UnicodeDecodeError:
                out.append("\ufffd")
            i += 2
        elif state == "kana":
            if 0x21 <= b <= 0x5F:
                out.append(chr(0xFF61 + b - 0x21))
            else:
                out.append(chr(b))
            i += 1
        else:
            if b > 0x7F:
                return None
            out.append(chr(b))
            i += 1
    return "".join(out)


def _jis_to_sjis(j1: int, j2: int) -> bytes | None:
    if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
        return None
    s1 = (j1 + 1) // 2 + (0x70 if j1 <= 0x5E else 0xB0)
    s2 = j2 + (0x1F if j1 % 2 else 0x7E)
    if j1 % 2 and s2 >= 0x7F:
        s2 += 1
    return bytes((s1, s2))


def _prefer_cp932(data: bytes, as_cp932: str, as_euc: str) -> bool:
    """Both decode: ask charset-normalizer about a prefix (cut at a line end), else count Japanese."""
    sample = data[:_SCORE_SAMPLE]
    if len(data) > _SCORE_SAMPLE and b"\n" in sample:
        sample = sample.rsplit(b"\n", 1)[0]
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(sample, cp_isolation=["cp932", "euc_jp"]).best()
    except ImportError:  # pragma: no cover - charset-normalizer is a dependency
        best = None
    if best is not None and best.encoding in ("cp932", "euc_jp"):
        return best.encoding == "cp932"
    n = _SCORE_SAMPLE
    return _japanese_score(as_cp932[:n]) >= _japanese_score(as_euc[:n])


def _japanese_score(text: str) -> int:
    """How much `text` looks like Japanese: hiragana, katakana and common kanji count; odd symbols do not."""
    score = 0
    for ch in text:
        o = ord(ch)
        if 0x3041 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF or 0x3000 <= o <= 0x3003:
            score += 1
        elif 0xFF61 <= o <= 0xFF9F:  # half-width katakana: rare in EUC-JP misreads of CP932 text
            score += 0
        elif o > 0x7F:
            score -= 1
    return score


def _normalizer_guess(data: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - charset-normalizer is a dependency
        return None
    best = from_bytes(data[: 256 * 1024], cp_isolation=["cp932", "euc_jp", "utf_8", "iso2022_jp", "utf_16"]).best()
    if best is None:
        return None
    try:
        return data.decode(best.encoding, "replace")
    except LookupError:
        return None
