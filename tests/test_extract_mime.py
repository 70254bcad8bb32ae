"""MIME walking and Japanese charsets: every body and attachment as real mailers write them."""

from __future__ import annotations

import base64
import quopri
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import ENCRYPTED, Part, extract_message  # noqa: E402

MY_NUMBER = "123456789018"  # synthetic
TEXT = "住民の個人番号①㈱～髙橋 " + MY_NUMBER


def raw_message(body: bytes, *, content_type: str = "text/plain", charset: str | None = "utf-8",
                cte: str = "8bit", headers: str = "") -> bytes:
    ctype = f'{content_type}; charset="{charset}"' if charset else content_type
    head = (f"From: =?UTF-8?B?{base64.b64encode('職員'.encode()).decode()}?= <staff@example.jp>\r\n"
            "To: a@example.com, =?ISO-2022-JP?B?GyRCQmdPOxsoQg==?= <b@example.org>\r\nCc: c@example.jp\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n{headers}\r\n")
    return head.encode() + body


def cp50220(text: str) -> bytes:
    """ISO-2022-JP as Windows writes it (NEC row 13 included): CP932 bytes re-coded as JIS X 0208."""
    out = bytearray()
    in_jis = False
    for ch in text:
        b = ch.encode("cp932")
        if len(b) == 1:
            if in_jis:
                out += b"\x1b(B"
                in_jis = False
            out += b
            continue
        s1, s2 = b
        if not in_jis:
            out += b"\x1b$B"
            in_jis = True
        j1 = (s1 - (0x70 if s1 < 0xA0 else 0xB0)) * 2 - (1 if s2 < 0x9F else 0)
        j2 = s2 - (0x1F if s2 < 0x7F else 0x20 if s2 < 0x9F else 0x7E)
        out += bytes((j1, j2))
    if in_jis:
        out += b"\x1b(B"
    return bytes(out)


def body(raw: bytes) -> Part:
    return next(p for p in extract_message(raw).parts if p.path == "body")


@pytest.mark.parametrize(("payload", "label"), [
    (TEXT.encode("cp932"), "shift_jis"),
    (TEXT.encode("cp932"), "iso-2022-jp"),  # Shift_JIS labelled ISO-2022-JP
    (TEXT.encode("cp932"), None),
    (cp50220(TEXT), "iso-2022-jp"),
    (TEXT.encode("utf-8"), "utf-8"),
    (TEXT.encode("utf-8"), "shift_jis"),  # wrong label the other way
    (TEXT.encode("utf-16"), "utf-16"),
])
def test_body_charsets(payload: bytes, label: str | None) -> None:
    assert body(raw_message(payload, charset=label)).text == TEXT


def test_euc_jp_and_plain_iso_2022_jp() -> None:
    plain = "住民の個人番号について " + MY_NUMBER
    assert body(raw_message(plain.encode("euc_jp"), charset="euc-jp")).text == plain
    assert body(raw_message(plain.encode("euc_jp"), charset=None)).text == plain
    assert body(raw_message(plain.encode("iso2022_jp"), charset="iso-2022-jp", cte="7bit")).text == plain


@pytest.mark.parametrize("cte", ["base64", "quoted-printable"])
def test_transfer_encodings(cte: str) -> None:
    data = TEXT.encode("cp932")
    encoded = base64.encodebytes(data) if cte == "base64" else quopri.encodestring(data)
    assert body(raw_message(encoded, charset="shift_jis", cte=cte)).text == TEXT


def test_headers_decoded() -> None:
    subject = "=?ISO-2022-JP?B?" + base64.b64encode(cp50220("個人番号①の送付")).decode() + "?="
    ex = extract_message(raw_message(b"x", headers=f"Subject: {subject}\r\n"))
    assert ex.subject == "個人番号①の送付"
    assert ex.header_from == "staff@example.jp"
    assert ex.header_to == ("a@example.com", "b@example.org")
    assert ex.header_cc == ("c@example.jp",)
    assert any(p.path == "subject" and p.text == "個人番号①の送付" for p in ex.parts)


def test_subject_split_mid_character_and_raw_8bit() -> None:
    jis = "名簿送付".encode("iso2022_jp")
    a, b = jis[:6], jis[6:]  # the first word ends inside the JIS sequence
    words = f"=?ISO-2022-JP?B?{base64.b64encode(a).decode()}?=\r\n =?ISO-2022-JP?B?{base64.b64encode(b).decode()}?="
    assert extract_message(raw_message(b"x", headers=f"Subject: {words}\r\n")).subject == "名簿送付"
    raw = raw_message(b"x").replace(b"MIME-Version", "Subject: 名簿①\r\n".encode("cp932") + b"MIME-Version")
    assert extract_message(raw).subject == "名簿①"


def multipart(parts: list[bytes], subtype: str = "mixed", boundary: str = "BOUNDARY") -> bytes:
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return out + b"--" + boundary.encode() + b"--\r\n"


def attachment(data: bytes, disposition: str, ctype: str = "application/octet-stream") -> bytes:
    return (f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n{disposition}\r\n\r\n").encode() + \
        base64.encodebytes(data)


def test_rfc2231_and_rfc2047_filenames_and_attachment_list() -> None:
    csv = fx.csv_bytes([fx.HEADER, *fx.resident_rows(3)])
    xlsx = fx.xlsx_bytes({"S": [fx.HEADER, *fx.resident_rows(3)]})
    jis_name = "".join(f"%{b:02X}" for b in "名簿.csv".encode("iso2022_jp"))
    utf_name = "".join(f"%{b:02X}" for b in "住民一覧.dat".encode())
    mime_name = "=?UTF-8?B?" + base64.b64encode("報告.pdf".encode()).decode() + "?="
    pdf = fx.pdf_bytes([["個人番号 " + MY_NUMBER]])
    msg = raw_message(multipart([
        b'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + TEXT.encode(),
        attachment(csv, f"Content-Disposition: attachment; filename*=ISO-2022-JP''{jis_name}"),
        attachment(xlsx, f"Content-Disposition: attachment; filename*=UTF-8''{utf_name}"),
        attachment(pdf, f'Content-Disposition: attachment; filename="{mime_name}"'),
    ]), content_type='multipart/mixed; boundary="BOUNDARY"', charset=None, cte="7bit")
    ex = extract_message(msg)
    paths = {p.path for p in ex.parts if p.unscannable is None}
    assert {"body", "名簿.csv", "住民一覧.dat/S", "報告.pdf"} <= paths
    atts = {a.filename: a for a in ex.attachments}
    assert atts["名簿.csv"].content_type == "csv" and atts["名簿.csv"].size == len(csv)
    assert atts["住民一覧.dat"].content_type == "xlsx" and len(atts["住民一覧.dat"].sha256) == 64
    assert atts["報告.pdf"].content_type == "pdf"


def test_alternative_html_and_forwarded_message() -> None:
    inner = fx.email_bytes("転送された本文 " + MY_NUMBER, subject="元の件名",
                           attachments=[("名簿.csv", fx.csv_bytes([fx.HEADER, *fx.resident_rows(2)]))])
    msg = raw_message(multipart([
        b'Content-Type: multipart/alternative; boundary="ALT"\r\n\r\n' + multipart(
            [b'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + "本文".encode(),
             b'Content-Type: text/html; charset="shift_jis"\r\n\r\n'
             + "<table><tr><td>1234</td><td>5678</td></tr></table>①".encode("cp932")], "alternative", "ALT"),
        b'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="fwd.eml"\r\n\r\n' + inner,
    ]), content_type='multipart/mixed; boundary="BOUNDARY"', charset=None, cte="7bit")
    parts = {p.path: p for p in extract_message(msg).parts}
    assert parts["body"].text == "本文"
    assert "1234\t5678" in parts["body.html"].text and "①" in parts["body.html"].text
    assert parts["body.html"].tables[0].rows == (("1234", "5678"),)
    assert MY_NUMBER in parts["fwd.eml/body"].text
    assert parts["fwd.eml/subject"].text == "元の件名"
    assert parts["fwd.eml/名簿.csv"].tables[0].rows[0] == fx.HEADER


def test_smime_and_pgp_are_encrypted() -> None:
    smime = raw_message(base64.encodebytes(bytes(range(256))), content_type="application/pkcs7-mime",
                        charset=None, cte="base64")
    assert any(p.unscannable == ENCRYPTED for p in extract_message(smime).parts)
    pgp = raw_message(b"-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n")
    assert any(p.unscannable == ENCRYPTED for p in extract_message(pgp).parts)


def test_garbage_is_never_an_exception() -> None:
    for raw in (b"", b"\x00\xff" * 100, b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
                b"Subject: =?bogus?Q?=ZZ?=\r\nContent-Type: text/plain; charset=no-such\r\n\r\n\xff\xfe"):
        ex = extract_message(raw)
        assert all(isinstance(p, Part) for p in ex.parts)


@pytest.mark.parametrize(("text", "encoding"), [
    ("ｱｲｳｴｵ ｶﾀｶﾅ ﾃｽﾄ", "cp932"), ("個人番号のお知らせ", "euc_jp"), ("個人番号のお知らせ", "cp932"),
    ("住所 例市 佐藤 太郎 ﾌﾘｶﾞﾅ", "cp932"), ("住所 例市 佐藤 太郎 ﾌﾘｶﾞﾅ", "euc_jp"), ("氏名", "euc_jp"),
])
def test_unlabelled_cp932_or_euc_jp(text: str, encoding: str) -> None:
    from dlpgate.extract.textdecode import decode_text

    assert decode_text(text.encode(encoding)) == text
    assert decode_text((text + "\n") .encode(encoding) * 20000) == (text + "\n") * 20000


# ------------------------------------------------------------- a body decoded where it lies
DECLARED = [None, "utf-8", "UTF8", "us-ascii", "shift_jis", "cp932", "euc-jp", "iso-2022-jp", "utf-16",
            "iso-8859-1", "windows-1252", "koi8-r", "utf-8-sig", "idna", "punycode", "rot13", "base64", "no-such"]
SAMPLES = [TEXT.encode(c, "replace") for c in ("utf-8", "cp932", "euc_jp", "iso2022_jp", "utf-16", "utf-16-le")] + [
    b"\xef\xbb\xbf" + TEXT.encode(), cp50220("①㈱ " + MY_NUMBER), b"\x00\xff" * 40, b"", b"plain ascii\r\n",
    "名簿\t番号\r\n".encode("utf-16-be") * 20, "ｶﾀｶﾅ\n".encode("cp932") * 3]


@pytest.mark.parametrize("declared", DECLARED)
def test_decode_text_reads_a_view_as_it_reads_bytes(declared: str | None) -> None:
    """A body is decoded from a memoryview into the message's bytes (no copy of it): every charset,
    declared right, wrong or unknown, BOM or none, decodes to what the body's own bytes decode to,
    and fails as they fail."""
    from dlpgate.extract.textdecode import decode_text

    for data in SAMPLES:
        view = memoryview(b"Subject: x\r\n\r\n" + data)[14:]
        try:
            expected: object = decode_text(data, declared)
        except Exception as exc:  # the same exception, whatever decode_text does with such a label
            expected = type(exc)
        try:
            got: object = decode_text(view, declared)
        except Exception as exc:
            got = type(exc)
        assert got == expected, (declared, data[:20])


def test_a_single_part_body_is_decoded_where_it_lies_in_the_message() -> None:
    """A 8bit text body is not copied out of the message before it is decoded (raw[end:] of a
    50 MB message is 22 ms of fresh pages): the buffer handed to decode_text is a view into the
    very bytes given to extract_message, and the part's text is the body's."""
    from dlpgate.extract import mime

    body = (TEXT + "\r\n").encode() * 100
    raw = raw_message(body)
    msg = mime.parse(raw)
    view = mime.body_buffer(msg)
    assert isinstance(view, memoryview) and view.obj is raw and view == body
    assert mime.payload_bytes(msg) == body  # an attachment's readers still get bytes
    assert [p.text for p in extract_message(raw).parts if p.path == "body"] == [body.decode()]
    b64 = mime.parse(raw_message(base64.encodebytes(body), cte="base64"))
    assert mime.body_buffer(b64) == body and isinstance(mime.body_buffer(b64), bytes)  # decoded: a copy anyway
