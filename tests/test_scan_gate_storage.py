"""The hyperscan gate scans a long str in place (a view of CPython's own storage, gate.py
`_StrStorage`) and finds exactly what it finds on the encoded copy; the copying path stays whole."""

from __future__ import annotations

import contextlib
import ctypes
import random
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlpgate.scan import gate as gate_module
from dlpgate.scan.scanner import Scanner

HS = Scanner.load(engine="hyperscan")
RE = Scanner.load(engine="re")
STORAGE = gate_module._STORAGE

# Characters of each storage kind: ASCII, latin-1 (one byte, not ASCII), UCS-2 (with lone
# surrogates, as surrogateescape leaves them), UCS-4 (beyond the BMP).
ASCII = st.characters(max_codepoint=0x7F)
LATIN1 = st.characters(min_codepoint=0x80, max_codepoint=0xFF)
BMP = st.characters(min_codepoint=0x100, max_codepoint=0xFFFF, blacklist_categories=())
ASTRAL = st.characters(min_codepoint=0x10000)
ANY = st.characters(blacklist_categories=())


@contextlib.contextmanager
def in_place(on: bool) -> Iterator[None]:
    """Every text scanned in place (however short), or none."""
    saved = gate_module._STORAGE, gate_module._IN_PLACE_MIN
    gate_module._STORAGE, gate_module._IN_PLACE_MIN = (STORAGE, 0) if on else (None, saved[1])
    try:
        yield
    finally:
        gate_module._STORAGE, gate_module._IN_PLACE_MIN = saved


def expected(text: str) -> tuple[bytes, int] | None:
    """What the gate encodes `text` to when it copies, for the kinds a view stands in for."""
    if text.isascii():
        return text.encode("ascii"), 1
    if max(text) <= "\xff":
        return None  # latin-1: encoded, never viewed
    if max(text) <= "\uffff":
        return text.encode("utf-16-le", "surrogatepass"), 2
    return text.encode("utf-32-le", "surrogatepass"), 4


def test_cpython_here_scans_in_place() -> None:
    """The layout self-check passes on this interpreter: without it every other test here would
    only compare the copying path with itself."""
    assert sys.implementation.name == "cpython"
    assert STORAGE is not None


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(ASCII, min_size=8, max_size=3000),
    st.tuples(st.text(ANY, min_size=8, max_size=3000), st.sampled_from(["", "\u3042", "\U0001f600", "\ud800", "\xe9"]))
    .map(lambda t: t[0] + t[1]),
    st.text(BMP, min_size=8, max_size=3000),
    st.text(ASTRAL, min_size=8, max_size=300),
    st.text(LATIN1, min_size=8, max_size=300),
))
def test_view_equals_the_encoding_for_every_kind(text: str) -> None:
    assert STORAGE is not None
    got = STORAGE.view(text)
    want = expected(text)
    if want is None:
        assert got is None
    else:
        assert got is not None
        view, width = got
        assert (view.tobytes(), width) == want
        assert view.readonly
        with pytest.raises(TypeError):
            view[0] = 0


def test_no_view_of_what_is_not_a_plain_compact_str() -> None:
    assert STORAGE is not None

    class Sub(str):
        pass

    long = "個人番号 621498320257\n" * 200
    assert STORAGE.view(Sub(long)) is None  # a subclass keeps its characters elsewhere
    assert STORAGE.view("é" * 5000) is None  # latin-1 is not the ASCII form
    assert STORAGE.view(long) is not None


def _cache_utf8(text: str) -> None:
    """What sqlite3 or any C argument parser with "s" does to a str: its UTF-8 form is kept on it."""
    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    as_utf8.restype, as_utf8.argtypes = ctypes.c_void_p, (ctypes.py_object, ctypes.c_void_p)
    assert as_utf8(text, None)


def test_a_str_whose_size_looks_like_another_kind_is_copied() -> None:
    """A UCS-2 str of n characters whose cached UTF-8 is 2n + 1 bytes has the size of a UCS-4 str
    of n: a kind guessed from the size would view 4n bytes of a 2n-byte buffer. The kind comes
    from the str's state, and the size must then match it exactly, so the gate copies this one and
    finds what it finds on any copy of it."""
    assert STORAGE is not None
    # ASCII characters a, three-byte ones c: UTF-8 a + 3c is 2(a + c) + 1 when c = a + 1
    text = "個人番号 621498320257\n" + "x" * 3000 + "\u3042" * 3011
    assert len(text.encode()) == 2 * len(text) + 1
    assert STORAGE.view(text) is not None
    _cache_utf8(text)
    assert sys.getsizeof(text) == STORAGE._header + 4 * (len(text) + 1)  # the size of a UCS-4 str
    assert STORAGE.view(text) is None
    with in_place(True):
        found = HS.gate.matches(text)
    with in_place(False):
        assert found == HS.gate.matches(text)
    assert found[0] and found[1]  # the trigger and the keyword


def test_kind_read_from_state_matches_every_kind() -> None:
    assert STORAGE is not None
    for text, kind, ascii in (("a" * 10, 1, True), ("é" * 10, 1, False), ("\u3042" * 10, 2, False),
                              ("\U0001f600" * 10, 4, False)):
        assert STORAGE._state(text) == (kind, True, ascii)


def test_self_check_refuses_a_layout_it_does_not_expect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any disagreement at import (here: sizes 8 bytes off, as a str with another header would
    be) leaves the gate copying; so does a missing C function."""
    assert gate_module._StrStorage.probe() is not None
    real = sys.getsizeof
    monkeypatch.setattr(gate_module.sys, "getsizeof", lambda o, *a: real(o, *a) + 8)
    assert gate_module._StrStorage.probe() is None
    monkeypatch.setattr(gate_module.sys, "getsizeof", real)
    monkeypatch.setattr(gate_module.sys.implementation, "name", "pypy")
    assert gate_module._StrStorage.probe() is None


PIECES = [
    "マイナンバー", "個人番号", "TEL", "ＴＥＬ", "カード番号", "氏名", "住所", "\t", ",", "\n", " ", "　", "-", "ー",
    "あいう", "abc", "621498320257", "６２１４", "9832", "0257", "4111", "1111", "12345678901", "0", "7",
    "😀", "\ud800", "é", "Individual ＮＵＭＢＥＲ", "\u212aey", "İ", "\u7400\u6500\u6c00\u0100", "数量", "単価",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=120), st.integers(0, 2**32))
def test_gate_matches_the_same_in_place_and_copied(pieces: list[str], seed: int) -> None:
    r = random.Random(seed)
    text = "".join(p if r.random() < 0.9 else p * r.randint(2, 40) for p in pieces)
    with in_place(False):
        copied = HS.gate.matches(text)
        copied_scan = HS.scan("p", text)
    with in_place(True):
        viewed = HS.gate.matches(text)
        viewed_scan = HS.scan("p", text)
    assert viewed == copied
    assert viewed_scan == copied_scan == RE.scan("p", text)


def test_long_texts_of_each_width_and_digit_dense_rescans_match() -> None:
    """Texts above the in-place length at the default setting, one per width, and a digit-dense one
    (the gate stops and rescans it anchored: the view is scanned twice)."""
    r = random.Random(19)
    line = "お世話になっております。個人番号 621498320257 TEL 03-1234-5678 注文番号 2024-123456\n"
    texts = [
        "My Number 621498320257, card 4111 1111 1111 1111, TEL 03-1234-5678\n" * 300,
        line * 300,
        (line + "😀\n") * 300,
        "\n".join(str(r.randrange(10**15, 10**16)) for _ in range(3000)),
        "\n".join("カード " + str(r.randrange(10**15, 10**16)) for _ in range(3000)),
    ]
    for text in texts:
        assert len(text) >= gate_module._IN_PLACE_MIN
        assert STORAGE is not None and STORAGE.view(text) is not None
        with in_place(False):
            copied = HS.gate.matches(text), HS.scan("p", text)
        viewed = HS.gate.matches(text), HS.scan("p", text)
        assert viewed == copied
        assert copied[0][0] or copied[0][1]  # each finds something
