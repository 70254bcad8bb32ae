import asyncio
import smtplib

from tests.conftest import Sink


def _send(port: int, sender: str, rcpts: list[str], data: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        return c.sendmail(sender, rcpts, data)


async def test_delivered_bytes_equal_sent_plus_trace(gateway, sink: Sink) -> None:
    body = (b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: hello\r\n\r\n" + b"line\r\n" * 50)
    await asyncio.to_thread(_send, gateway.smtp_port, "a@example.jp", ["b@example.com"], body)
    got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
    assert len(got) == 1
    assert got[0].mail_from == "a@example.jp"
    assert got[0].rcpt_tos == ["b@example.com"]
    assert got[0].data.startswith(b"Received: from ")
    assert got[0].data.endswith(body)
    trace, _, rest = got[0].data.partition(b"\r\n\t")
    assert b"by gw.test (dlpgate)" in got[0].data[: len(got[0].data) - len(body)]
