"""The remembered-header policy of extract/mime.py must read mail exactly as policy.default does.

It hands back a header object parsed earlier for the same (name, value); these tests parse the
same random MIME with both policies, cold and warm, and compare everything extraction reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
sys.path.insert(0, str(Path(__file__).parent))
import make_fixtures as fx  # noqa: E402
from test_extract_fuzz import CHUNKS  # noqa: E402

from dlpgate.extract import (  # noqa: E402
    ExtractLimits,
    extract_message,
    mime,  # noqa: E402
)

PLAIN = mime._MemoHeaderPolicy.__mro__[1]()  # EmailPolicy(): exactly policy.default


def described(raw: bytes, policy: object) -> list[tuple[object, ...]]:
    from email.parser import BytesParser

    out: list[tuple[object, ...]] = []
    msg = BytesParser(policy=policy).parsebytes(raw)  # type: ignore[arg-type]
    for part in msg.walk():
        row: list[object] = [part.get_content_type(), part.get_content_charset(), part.get_content_disposition(),
                             part.is_multipart(), [str(d) for d in part.defects]]
        for get in (lambda p: p.get_filename(), lambda p: p.get_param("boundary"), lambda p: str(p.get("subject")),
                    lambda p: [str(v) for v in p.get_all("to", [])]):
            try:
                row.append(get(part))
            except Exception as e:  # noqa: BLE001 - the exception type must match too
                row.append(type(e).__name__)
        out.append(tuple(row))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHUNKS, max_size=40))
def test_same_reading_as_policy_default(chunks: list[bytes]) -> None:
    raw = b"".join(chunks)
    expected = described(raw, PLAIN)
    assert described(raw, mime._PARSE_POLICY) == expected  # cold or warm cache
    assert described(raw, mime._PARSE_POLICY) == expected  # certainly warm


def test_extraction_identical_with_and_without_memo(monkeypatch) -> None:  # noqa: ANN001
    rows = [fx.HEADER, *fx.resident_rows(5)]
    samples = [
        fx.email_bytes("本文です", attachments=[("名簿.csv", fx.csv_bytes(rows)), ("名簿.xlsx", fx.xlsx_bytes({"s": rows}))]),
        fx.email_bytes("転送します", attachments=[("fwd.eml", fx.email_bytes("内側", attachments=[]))]),
    ]
    limits = ExtractLimits()
    warm = [extract_message(raw, limits) for raw in samples * 2][-len(samples):]
    monkeypatch.setattr(mime, "_PARSE_POLICY", PLAIN)
    plain = [extract_message(raw, limits) for raw in samples]
    assert warm == plain


def test_memo_is_bounded() -> None:
    limit = mime._parsed_header.cache_info().maxsize
    assert limit
    for i in range(limit + 10):
        mime._PARSE_POLICY.header_fetch_parse("X-N", f"v{i}")
    assert mime._parsed_header.cache_info().currsize <= limit


ADDRESS_HEADERS = st.lists(st.sampled_from([
    "a@example.jp", "名前 <b@example.com>", "=?UTF-8?B?5ZCN5YmN?= <c@example.org>", "<>", "undisclosed-recipients:;",
    "x@y, z@w", "\"quoted, name\" <q@example.jp>", "broken <", "d@example.jp (comment)", "\r\n e@example.jp",
]), min_size=1, max_size=4).map(", ".join)


@settings(max_examples=200, deadline=None)
@given(ADDRESS_HEADERS)
def test_remembered_address_lists_read_the_same(value: str) -> None:
    from email.utils import getaddresses

    raw = f"From: s@example.jp\r\nTo: {value}\r\n\r\nbody\r\n".encode()
    msg = mime.parse(raw)
    unfolded = value.replace("\r\n", " ").replace("\n", " ")
    expected = [a for _, a in getaddresses([unfolded]) if a and "@" in a and a != "<>"]
    assert mime.addresses(msg, "to") == expected  # cold or warm
    assert mime.addresses(msg, "to") == expected  # warm


PARSE_CHUNKS = st.one_of(
    CHUNKS,
    st.sampled_from([b"\n", b"\r", b"\r\n\r\n", b"\n\n", b"From someone\r\n", b" folded\r\n", b"\tfolded\r\n",
                     b": no name\r\n", b"no colon\r\n", b"Content-Type: multipart/mixed; boundary=B\r\n",
                     b"Content-Type: message/rfc822\r\n", b"Content-Type: text/plain; charset=utf-8\r\n",
                     b"Content-Type: message/delivery-status\r\n", b"Subject: x\r\n", "本文\r\n".encode()]),
)


def structure(msg: object) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for part in msg.walk():  # type: ignore[attr-defined]
        payload = part._payload  # the raw text, before get_payload() decodes anything
        out.append((part.get_unixfrom(), list(part.raw_items()), [repr(d) for d in part.defects],
                    part.is_multipart(), payload if isinstance(payload, str) else len(payload),
                    part.get_content_type(), part.preamble, part.epilogue))
    return out


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PARSE_CHUNKS, max_size=30))
def test_single_part_fast_parse_is_the_full_parse(chunks: list[bytes]) -> None:
    """mime.parse reads a single-part message from its header block: the same message as the
    feed parser's full walk, for any bytes (multipart and odd header blocks take the full walk),
    and the same decoded body."""
    from email.parser import BytesParser

    raw = b"".join(chunks)
    fast, full = mime.parse(raw), BytesParser(policy=mime._PARSE_POLICY).parsebytes(raw)
    bodies = [mime.payload_bytes(p) for p in fast.walk()]  # before structure() makes the text
    assert bodies == [mime.payload_bytes(p) for p in full.walk()]
    assert structure(fast) == structure(full)


def test_fast_parse_is_taken_for_a_plain_message() -> None:
    raw = b"From: a@example.jp\r\nSubject: x\r\n\r\n" + "本文\r\n".encode() * 50
    msg = mime.parse(raw)
    assert isinstance(msg, mime._SinglePartMessage) and not msg.is_multipart()
    assert mime.payload_bytes(msg) is msg._raw_body  # no decode and re-encode
    assert msg._payload == raw.split(b"\r\n\r\n", 1)[1].decode("ascii", "surrogateescape")
    assert structure(msg) == structure(__import__("email.parser").parser.BytesParser(
        policy=mime._PARSE_POLICY).parsebytes(raw))


@pytest.mark.parametrize("cte, body", [
    ("base64", b"5pys5paH44Gn44GZ\r\n"), ("quoted-printable", b"=E6=9C=AC=E6=96=87 soft=\r\nbreak\r\n"),
    ("8bit", "本文\r\n".encode()), ("7bit", b"plain\r\n"), ("BASE64", b"5pys5paH\r\n"), ("x-unknown", b"as is\r\n"),
])
def test_fast_parse_decodes_every_transfer_encoding_as_email_does(cte: str, body: bytes) -> None:
    from email.parser import BytesParser

    raw = f"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + body
    fast = mime.parse(raw)
    assert isinstance(fast, mime._SinglePartMessage)
    assert mime.payload_bytes(fast) == BytesParser(policy=mime._PARSE_POLICY).parsebytes(raw).get_payload(decode=True)


PARAM_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ019 =;\"'\\*%-_.") + ["名", "簿", "\t"]), max_size=40)
PARAM_VALUES = st.one_of(
    PARAM_TEXT,
    st.builds(lambda t, c, n, v: f"{t}; {c}={v}; {n}", st.sampled_from(["text/plain", "attachment", "inline", "x"]),
              st.sampled_from(["charset", "filename", "name", "filename*", "filename*0*", "CHARSET", "Name"]),
              st.sampled_from(["", "filename*1*=%E5%90%8D", "format=flowed", "name=\"a;b.csv\""]),
              st.one_of(PARAM_TEXT, st.sampled_from(["utf-8", "\"ISO-2022-JP\"", "utf-8''%E5%90%8D%E7%B0%BF.xlsx",
                                                      "\"a \\\" b.csv\"", "=?utf-8?b?5ZCN57C/?="]))),
)


def _reads(msg: object) -> list[object]:
    out: list[object] = []
    for read in (lambda m: m.get_content_charset(), lambda m: m.get_filename(), lambda m: m.get_params(),
                 lambda m: m.get_params(header="content-disposition"), lambda m: m.get_param("name"),
                 lambda m: m.get_param("filename", header="content-disposition", unquote=False),
                 lambda m: m.get_content_type(), lambda m: m.get_boundary()):
        try:
            out.append(read(msg))
        except Exception as e:  # noqa: BLE001 - the exception type must match too
            out.append(type(e).__name__)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctype=PARAM_VALUES, disposition=PARAM_VALUES, long=st.booleans())
def test_remembered_parameters_read_as_email_does(ctype: str, disposition: str, long: bool) -> None:
    """A single-part message splits a header's parameters once per distinct value (memo): charset,
    filename and every get_param read the same as the full parse, twice in a row, for short values
    (remembered) and long ones (split every time)."""
    from email.parser import BytesParser

    if long:
        ctype += "; x-pad=" + "p" * mime._PARAMS_MEMO_CHARS
    head = f"Subject: x\r\nContent-Type: {ctype}\r\nContent-Disposition: {disposition}\r\n\r\n"
    raw = head.encode() + "本文\r\n".encode()
    try:
        full = BytesParser(policy=mime._PARSE_POLICY).parsebytes(raw)
    except Exception as e:  # noqa: BLE001 - email's own parser gives up on some values: so must the fast one
        with pytest.raises(type(e)):
            mime.parse(raw)
        return
    fast = mime.parse(raw)
    if not isinstance(fast, mime._SinglePartMessage):
        return  # a multipart or message/* type: the full parse, nothing remembered
    assert _reads(fast) == _reads(full)
    assert _reads(fast) == _reads(full)  # and again, from the memo


def test_a_changed_header_is_split_anew() -> None:
    msg = mime.parse(b"Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n")
    assert isinstance(msg, mime._SinglePartMessage)
    assert msg.get_content_charset() == "utf-8"
    msg.set_param("charset", "iso-2022-jp")
    assert msg.get_content_charset() == "iso-2022-jp"
    del msg["content-type"]
    assert msg.get_content_charset() is None
