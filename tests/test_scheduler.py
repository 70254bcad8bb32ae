"""The delay scheduler never loses a wake-up: a message committed while a claim runs goes out at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dlpgate.delivery import Delivery
from dlpgate.store import DELAYED, AsyncStore, ClaimJob, NewMessage, new_id
from tests.conftest import Sink, make_config


async def test_poke_during_a_claim_is_not_lost(tmp_path: Path, sink: Sink) -> None:
    cfg = make_config(tmp_path, sink.port)
    store = AsyncStore(cfg.store_path)
    real_run = store.run
    claiming = asyncio.Event()
    release = asyncio.Event()

    async def slow_run(job):  # noqa: ANN001, ANN202 - the first claim returns only when the test says so
        result = await real_run(job)
        if isinstance(job, ClaimJob) and not release.is_set():
            claiming.set()  # the claim has looked at the store (found nothing) but not returned yet
            await release.wait()
        return result

    store.run = slow_run  # type: ignore[method-assign]
    d = Delivery(cfg, store, "gw.test")
    await d.start()
    try:
        await asyncio.wait_for(claiming.wait(), 5)  # the scheduler is inside its first claim
        mid = new_id()
        raw = b"Subject: x\r\n\r\nbody\r\n"
        rel = await store.write_spool(mid, raw)
        now = time.time()
        m = NewMessage(id=mid, sender="a@example.jp", recipients=("b@example.com",), spool=rel, size=len(raw),
                       sha256="0" * 64, arrived=now, state=DELAYED, due_at=now)

        def commit(s):  # noqa: ANN001, ANN202
            s.sync_spool([rel])
            s.accept(m)

        await real_run(commit)
        d.poke(now)  # arrives while the claim that cannot see the message is still running
        release.set()
        t0 = time.monotonic()
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 4)
        assert len(got) == 1 and time.monotonic() - t0 < 2.0  # not the 5 s idle poll
    finally:
        await d.stop(timeout=2)
        store.close()
