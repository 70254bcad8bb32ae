"""100k queued messages are rows, not tasks: the scheduler stays O(1) in tasks and finds due work fast."""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path

from dlpgate.store import Store
from tests.conftest import Sink, make_config, running


def fill(store_path: Path, n: int) -> None:
    st = Store(store_path)
    now = time.time()
    with st.transaction() as c:
        c.executemany(
            "INSERT INTO messages(id, state, sender, arrived, due_at, spool, updated) VALUES (?,?,?,?,?,?,?)",
            ((f"bulk{i:08d}", "delayed", "a@example.jp", now, now + 3600 + i, f"spool/xx/bulk{i}.eml", now)
             for i in range(n)))
        plan = " ".join(str(r[3]) for r in c.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM messages INDEXED BY messages_due WHERE state IN ('delayed','deferred','released')"
            " AND due_at <= ? ORDER BY due_at LIMIT 16", (now,)))
    st.close()
    assert "messages_due" in plan, plan  # the partial index on due_at, not a scan of the queue


async def test_hundred_thousand_queued(tmp_path: Path, sink: Sink) -> None:
    fill(tmp_path / "store", 100_000)
    async with running(make_config(tmp_path, sink.port)) as gw:
        assert len(asyncio.all_tasks()) < 40  # scheduler + fixed delivery workers + housekeeping
        t0 = time.monotonic()

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                c.sendmail("a@example.jp", ["b@example.com"], b"Subject: now\r\n\r\nx\r\n")

        await asyncio.to_thread(send)
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
        assert len(got) == 1 and time.monotonic() - t0 < 3.0
        assert len(asyncio.all_tasks()) < 40
