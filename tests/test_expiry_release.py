"""Issue 15 item 9: `expire_action = "release"` never auto-releases a two-person hold or an
unscannable one (unless `expire_release_all = true`): those expire unsent. Real gateway, real
SMTP in, real upstream sink."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from dlpgate.pipeline import Envelope, Judgement, _fail_closed
from dlpgate.store import Store
from tests.conftest import Sink, running
from tests.conftest import smtp_data as send
from tests.test_approval_loop import SENDER, gateway_config, held_id, wait_for
from tests.test_approval_support import mail_with_numbers, synthetic_numbers


def mixed_judge() -> Any:
    async def judge(spool: Path, env: Envelope, first_contact: Any = (), data: bytes | None = None) -> Judgement:
        if "broken@example.com" in env.recipients:
            return _fail_closed("corrupt", "the scanner could not read this message")
        need = 2 if "bulk@example.com" in env.recipients else 1
        return Judgement(verdict="hold", rules=("my_number",), reason="My Number with keyword",
                         findings=({"rule": "my_number", "detector": "my_number", "count": 3, "severity": "high",
                                    "part": "meibo.csv", "sample": "6214********"},),
                         records=3, subject="名簿の送付", approvals_required=need)
    return judge


async def run_expiry(tmp_path: Path, sink: Sink, release_all: bool) -> dict[str, str]:
    cfg, _ = gateway_config(tmp_path, sink, expire_after=1.0, remind_every=0.0, expire_action="release")
    cfg = replace(cfg, quarantine=replace(cfg.quarantine, expire_release_all=release_all))
    ids = {}
    async with running(cfg) as gw:
        assert gw.pipeline is not None
        gw.pipeline.judge = mixed_judge()  # type: ignore[method-assign]
        for rcpt in ("one@example.com", "bulk@example.com", "broken@example.com"):
            raw = mail_with_numbers(SENDER, [rcpt], synthetic_numbers(3, seed=31))
            ids[rcpt] = held_id((await asyncio.to_thread(send, gw.smtp_port, SENDER, [rcpt], raw))[1])
        await asyncio.sleep(1.1)
        await gw.housekeep_once()
        await wait_for(lambda: sink.handler.to("one@example.com"))
        await wait_for(lambda: len(sink.handler.to(SENDER)) >= 3)  # an expiry notice for each
        await asyncio.sleep(0.5)
    st = Store(tmp_path / "store")
    try:
        return {r: st.get(i)["state"] for r, i in ids.items()}
    finally:
        st.close()


async def test_release_on_expiry_spares_two_person_and_unscannable_holds(tmp_path: Path, sink: Sink) -> None:
    states = await run_expiry(tmp_path, sink, release_all=False)
    assert states["one@example.com"] in ("released", "delivered")
    assert states["bulk@example.com"] == "expired" and states["broken@example.com"] == "expired"
    assert sink.handler.to("bulk@example.com") == [] and sink.handler.to("broken@example.com") == []


async def test_release_all_is_an_explicit_choice(tmp_path: Path, sink: Sink) -> None:
    states = await run_expiry(tmp_path, sink, release_all=True)
    assert all(s in ("released", "delivered") for s in states.values()), states
