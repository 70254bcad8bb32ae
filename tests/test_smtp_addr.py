"""The fast address path agrees with aiosmtpd's parser on every address it accepts."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.smtp import GatewaySMTP
from dlpgate.smtp_addr import simple_address

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=12)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
rest = st.sampled_from(["", " SIZE=1000", " BODY=8BITMIME", " SIZE=5 SMTPUTF8"])


def reference(arg: str) -> tuple[str | None, str | None]:
    class Bare:
        local_part_limit = 0

    return GatewaySMTP.__mro__[1]._getaddr(Bare(), arg)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(atoms, min_size=1, max_size=3), st.lists(labels, min_size=1, max_size=4), rest)
def test_fast_path_equals_aiosmtpd(local: list[str], domain: list[str], tail: str) -> None:
    arg = f"<{'.'.join(local)}@{'.'.join(domain)}>{tail}"
    fast = simple_address(arg)
    assert fast is not None
    addr, more = reference(arg)
    assert fast[0] == addr
    assert fast[1].strip() == (more or "").strip()


def test_unusual_forms_fall_back() -> None:
    for arg in ("<>", '<"john doe"@example.jp>', "<@route:a@b.jp>", "<a@[192.0.2.1]>", "a@b.jp", "<a..b@c.jp>"):
        assert simple_address(arg) is None


async def test_gateway_uses_it_over_smtp(gateway, sink) -> None:  # noqa: ANN001
    import smtplib

    def send() -> dict:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as c:
            return c.sendmail("a.b+tag@example.jp", ['"odd name"@example.com', "c@example.com"],
                              b"Subject: x\r\n\r\nbody\r\n")

    assert await asyncio.to_thread(send) == {}
    got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
    assert got[0].mail_from == "a.b+tag@example.jp"
    assert sorted(got[0].rcpt_tos) == ['"odd name"@example.com', "c@example.com"]
