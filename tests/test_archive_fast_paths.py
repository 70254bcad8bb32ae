"""The archive reader's shortcuts say what the plain tests they replace say (issue 19)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.archive.headers import _is_field_name
from dlpgate.archive.readers import Item, Source, _mbox_item, has_quoted_from, unquote_mbox

PIECES = st.sampled_from([b">", b">>", b"From ", b"From", b"F", b"rom ", b"\n", b"x", b"> ", b"<id@example.jp>"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(PIECES, max_size=120).map(b"".join))
def test_quoted_from_found_from_one_gt_to_the_next_as_by_a_search(data: bytes) -> None:
    assert has_quoted_from(data) == (b">From " in data)


def test_quoted_from_past_many_gt() -> None:
    for n in (0, 1, 31, 32, 33, 100):
        assert has_quoted_from(b"<a>" * n + b"\n>From x\n")
        assert not has_quoted_from(b"<a>" * n + b"\nFrom x\n> From")
        assert unquote_mbox(b"<a>" * n + b"\n>From x\n") == b"<a>" * n + b"\nFrom x\n"


@settings(max_examples=2000, deadline=None)
@given(st.text(st.characters(max_codepoint=0x3100), max_size=12))
def test_field_names_as_rfc_5322_has_them(name: str) -> None:
    assert _is_field_name(name) == all(33 <= ord(c) <= 126 for c in name)


def _block_item(path: str, buf: bytes, start: int, end: int, base: int) -> Item:
    """readers._mbox_item as it was, on a copy of the block: the reference."""
    offset = base + start
    block = buf[start:end]
    position = base + end
    if not block.strip():
        return Item("", None, end - start, position)
    if not block.startswith(b"From "):
        return Item(f"{path}@{offset}", None, end - start, position,
                    "damaged block: bytes that are not a message (no From_ line)")
    first = block.find(b"\n")
    body_start = first + 1 if first >= 0 else len(block)
    length = len(block) - body_start
    if block.endswith(b"\n\n"):
        length -= 1
    elif block.endswith(b"\r\n\r\n"):
        length -= 2
    if length <= 0 or not block[body_start:body_start + 1].strip():
        return Item(f"{path}@{offset}", None, end - start, position, "damaged block: empty message")
    return Item(f"{path}@{offset}", Source("mbox", path, offset + body_start, length), end - start, position)


BLOCK_PIECES = st.sampled_from([b"From ", b"From a@b Mon Jan  1 00:00:00 2024", b"\n", b"\r\n", b" ", b"\t", b"\x0b",
                                b"Subject: x", b"x", b"\n\n", b"\r\n\r\n", b"F"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(BLOCK_PIECES, max_size=12).map(b"".join), st.lists(BLOCK_PIECES, max_size=12).map(b"".join),
       st.lists(BLOCK_PIECES, max_size=4).map(b"".join), st.integers(0, 10**9))
def test_a_block_read_where_it_lies_is_the_block_copied(before: bytes, block: bytes, after: bytes, base: int) -> None:
    buf = before + block + after
    start, end = len(before), len(before) + len(block)
    assert _mbox_item("a.mbox", buf, start, end, base) == _block_item("a.mbox", buf, start, end, base)


MBOX_PIECES = st.sampled_from([b"From a@b Mon Jan  1 00:00:00 2024\n", b"From x\n", b"\nFrom ", b"From ", b"\n", b"\r\n",
                               b"\n\n", b"Subject: s\n", b"body text\n", b">From q\n", b"QUJD" * 5, b"\n\rFrom "])


@settings(max_examples=400, deadline=None)
@given(st.lists(MBOX_PIECES, max_size=40).map(b"".join), st.sampled_from([7, 16, 64, 1 << 20]),
       st.integers(0, 3))
def test_mbox_split_by_the_index_as_by_a_search(data: bytes, read: int, skip: int) -> None:
    """The reader finds the same messages with its `\\nFrom ` index (hyperscan) as by searching
    its buffer, whatever the read size (separators straddling two reads) and the start position."""
    import tempfile

    from dlpgate.archive import readers

    with tempfile.NamedTemporaryFile(suffix=".mbox") as f:
        f.write(data)
        f.flush()
        start = min(skip, len(data))
        old = readers.MBOX_READ, readers._FROM_DB
        try:
            readers.MBOX_READ = read
            indexed = list(readers.read_mbox(f.name, start))
            readers._FROM_DB = False  # no index: the buffer is searched
            searched = list(readers.read_mbox(f.name, start))
        finally:
            readers.MBOX_READ, readers._FROM_DB = old
    assert readers._FromIndex.new() is not None  # hyperscan is a dependency on this machine
    assert indexed == searched
