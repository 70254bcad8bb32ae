"""The gateway's DATA reader (smtp.read_dot_terminated) against the SMTP rules it replaces
aiosmtpd's line loop for: dot-stuffing undone, the end marker found across any chunking,
pipelined commands after the dot left for the next read, and aiosmtpd's 552 / 500 limits."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.smtp import read_dot_terminated

LINE_LIMIT = 1001  # aiosmtpd's line_length_limit, CRLF included


def stuff(lines: list[bytes]) -> bytes:
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


async def feed(wire: bytes, cuts: list[int], size_limit: int | None = None) -> tuple[object, bytes]:
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    points = sorted({min(max(c, 0), len(wire)) for c in cuts} | {0, len(wire)})

    async def writer() -> None:
        for a, b in zip(points, points[1:], strict=False):
            reader.feed_data(wire[a:b])
            await asyncio.sleep(0)
        reader.feed_eof()

    task = asyncio.create_task(writer())
    got = await read_dot_terminated(reader, size_limit, LINE_LIMIT)
    await task
    rest = await reader.read()
    return got, rest


LINES = st.lists(st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b".", b"..", b".x", b"", b" .", b"\r", b"\n.", b"..."]).map(lambda b: b.replace(b"\r", b"")),
), max_size=30)


@settings(max_examples=300, deadline=None)
@given(lines=LINES, cuts=st.lists(st.integers(0, 4000), max_size=12), pipelined=st.sampled_from([b"", b"QUIT\r\n",
                                                                                                 b"MAIL FROM:<a@b>\r\n"]))
def test_round_trip_under_any_chunking(lines: list[bytes], cuts: list[int], pipelined: bytes) -> None:
    got, rest = asyncio.run(feed(stuff(lines) + pipelined, cuts))
    assert got == b"".join(ln + b"\r\n" for ln in lines)
    assert rest == pipelined


def test_empty_message_and_lone_dots() -> None:
    assert asyncio.run(feed(b".\r\n", []))[0] == b""
    assert asyncio.run(feed(b"..\r\n.\r\n", [1, 2, 3]))[0] == b".\r\n"
    assert asyncio.run(feed(b"a\r\n..\r\n...\r\n.\r\n", [5]))[0] == b"a\r\n.\r\n..\r\n"
    assert asyncio.run(feed(b"a\r\n.b\r\n", []))[0] is None  # the client left before the dot


def test_size_limit_552_counts_like_aiosmtpd_and_reads_to_the_end() -> None:
    body = b"x" * 98 + b"\r\n"  # 100 bytes of lines
    assert asyncio.run(feed(body + b".\r\n", [], size_limit=100))[0] == body
    got, rest = asyncio.run(feed(body + b"y\r\n.\r\nQUIT\r\n", [7, 50, 101], size_limit=100))
    assert got == "552 Error: Too much mail data" and rest == b"QUIT\r\n"
    big = (b"z" * 998 + b"\r\n") * 3000  # 3 MB against a 10 KB limit: read in full, kept small
    got, rest = asyncio.run(feed(big + b".\r\nQUIT\r\n", list(range(0, len(big), 65536)), size_limit=10_000))
    assert got == "552 Error: Too much mail data" and rest == b"QUIT\r\n"


def test_line_length_limit_500_like_aiosmtpd() -> None:
    ok = b"a" * (LINE_LIMIT - 2) + b"\r\n"  # 1001 bytes with its CRLF: allowed
    assert asyncio.run(feed(ok + b".\r\n", [300]))[0] == ok
    long = b"a" * (LINE_LIMIT - 1) + b"\r\n"
    got, _ = asyncio.run(feed(b"short\r\n" + long + b".\r\n", [300]))
    assert got == "500 Line too long (see RFC5321 4.5.3.1.6)"


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.one_of(st.integers(0, 40).map(lambda n: b"x" * n), st.sampled_from([b"\r\n", b"\r", b"\n"])),
                      max_size=60), longest=st.integers(0, 45))
def test_long_line_check_is_the_split_one(parts: list[bytes], longest: int) -> None:
    """The window-jumping line check answers what splitting on CRLF and taking the longest does."""
    from dlpgate.smtp import _has_long_line

    raw = b"".join(parts)
    assert _has_long_line(raw, longest) == (max(map(len, raw.split(b"\r\n"))) > longest)
