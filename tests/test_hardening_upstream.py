"""Upstream faults over loopback SMTP against a scriptable fake upstream: every fault ends in
`deferred`, then the message is delivered exactly once when the upstream is healthy; a hung
upstream never slows acceptance; TLS to the upstream as `[relay] tls` says."""

from __future__ import annotations

import asyncio
import smtplib
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dlpgate.config import Config, RelayConfig
from dlpgate.server import Gateway
from dlpgate.store import Store
from tests.conftest import free_port, make_config, wait_until
from tests.test_hardening_support import FakeUpstream, make_tls, message


def relay_config(tmp_path: Path, port: int, **relay: object) -> Config:
    cfg = make_config(tmp_path, port)
    # probe off: these tests count the fake upstream's connections and script a fault per connection
    r = RelayConfig(upstream=f"127.0.0.1:{port}", tls="off", retry_initial=0.3, retry_max=0.6, timeout=1.0,
                    probe=False)
    return replace(cfg, relay=replace(r, **relay))  # type: ignore[arg-type]


def send(port: int, n: int | str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.sendmail("a@example.jp", ["b@example.com"], message(n))
    return f"h{n}@test"


def events(store: Path) -> list[str]:
    st = Store(store)
    try:
        return [e.event for e in st.audit_entries()]
    finally:
        st.close()


def only_row(store: Path) -> dict:
    st = Store(store)
    try:
        rows = st.list()
        assert len(rows) == 1
        return st.get(rows[0]["id"])
    finally:
        st.close()


async def deferred_then_delivered_once(gw: Gateway, up: FakeUpstream, mid: str, store: Path) -> dict:
    await wait_until(lambda: "deferred" in events(store), timeout=10)
    await wait_until(lambda: only_row(store)["state"] == "delivered", timeout=15)
    await asyncio.sleep(0.8)  # a late duplicate would show up here (retries run every 0.3-0.6 s)
    assert up.ids() == [mid]
    row = only_row(store)
    assert row["state"] == "delivered" and row["attempts"] >= 2
    ev = events(store)
    assert ev.index("deferred") < ev.index("delivered") and ev.count("delivered") == 1
    return row


FAULT_CASES = {
    "421_greeting": ["421_greeting"],
    "421_mid_session": ["421_mail"],
    "hung_before_banner": ["silent"],
    "timeout_after_data": ["hang_after_data"],
    "dropped_in_data": ["drop_in_data", "drop_in_data"],  # a dropped fresh connection is retried once at once
    "451_after_data": ["451_data"],
}


@pytest.mark.parametrize("faults", FAULT_CASES.values(), ids=FAULT_CASES.keys())
async def test_fault_is_deferred_then_delivered_once(tmp_path: Path, faults: list[str]) -> None:
    up = FakeUpstream(faults=list(faults))
    await up.start()
    gw = Gateway(relay_config(tmp_path, up.port), workers=1)
    await gw.start()
    try:
        mid = await asyncio.to_thread(send, gw.smtp_port, 1)
        await deferred_then_delivered_once(gw, up, mid, tmp_path / "store")
        assert not up.faults  # every scripted fault was really met
    finally:
        await gw.stop(grace=2)
        await up.stop()


async def test_refused_connection_deferred_then_delivered_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: connection refused
    gw = Gateway(relay_config(tmp_path, port), workers=1)
    await gw.start()
    up = FakeUpstream(port=port)
    try:
        mid = await asyncio.to_thread(send, gw.smtp_port, 1)
        await wait_until(lambda: "deferred" in events(tmp_path / "store"), timeout=10)
        await up.start()
        await deferred_then_delivered_once(gw, up, mid, tmp_path / "store")
    finally:
        await gw.stop(grace=2)
        await up.stop()


async def test_hung_upstream_never_blocks_acceptance(tmp_path: Path) -> None:
    up = FakeUpstream(faults=["silent"] * 1000)  # accepts TCP, never answers
    await up.start()
    gw = Gateway(relay_config(tmp_path, up.port, timeout=30.0), workers=1)
    await gw.start()
    try:
        def timed(n: int) -> float:
            t0 = time.monotonic()
            send(gw.smtp_port, n)
            return time.monotonic() - t0

        # first get the delivery workers stuck on the silent upstream, then measure accepting
        await asyncio.to_thread(timed, 1000)
        await wait_until(lambda: up.connections >= 1, timeout=15)
        t0 = time.monotonic()
        lat = await asyncio.gather(*(asyncio.to_thread(timed, n) for n in range(30)))
        assert time.monotonic() - t0 < 10
        assert max(lat) < 5, f"slowest accept {max(lat):.2f}s"
        assert up.accepted == []
        st = Store(tmp_path / "store")
        assert len(st.list()) == 31
        st.close()
    finally:
        await gw.stop(grace=1)
        await up.stop()


# ------------------------------------------------------------------------------------- TLS
async def test_tls_required_refuses_clear_then_delivers_over_verified_tls(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    plain = FakeUpstream()  # healthy, but offers no STARTTLS
    await plain.start()
    gw = Gateway(relay_config(tmp_path, plain.port, tls="required", tls_ca_file=str(tls.ca_file)), workers=1)
    await gw.start()
    try:
        mid = await asyncio.to_thread(send, gw.smtp_port, 1)
        await wait_until(lambda: "deferred" in events(tmp_path / "store"), timeout=10)
        await asyncio.sleep(0.8)  # several retries against it
        assert plain.connections >= 2 and plain.clear_data == [] and plain.accepted == []
        await plain.stop()
        good = FakeUpstream(tls_context=tls.server_context(), port=plain.port)
        await good.start()
        try:
            await deferred_then_delivered_once(gw, good, mid, tmp_path / "store")
            assert good.accepted[0].tls and good.clear_data == []
        finally:
            await good.stop()
    finally:
        await gw.stop(grace=2)
        await plain.stop()


async def test_tls_required_with_untrusted_certificate_or_broken_handshake_is_deferred(tmp_path: Path) -> None:
    ours, theirs = make_tls(tmp_path / "ours"), make_tls(tmp_path / "theirs")
    up = FakeUpstream(tls_context=theirs.server_context(), faults=["tls_garbage"] * 2)
    await up.start()
    gw = Gateway(relay_config(tmp_path, up.port, tls="required", tls_ca_file=str(ours.ca_file)), workers=1)
    await gw.start()
    try:
        await asyncio.to_thread(send, gw.smtp_port, 1)
        await wait_until(lambda: events(tmp_path / "store").count("deferred") >= 3, timeout=10)
        assert not up.faults  # the broken handshakes came first, then certificates we do not trust
        assert up.accepted == [] and up.clear_data == []
        assert only_row(tmp_path / "store")["state"] in ("deferred", "delivering")
    finally:
        await gw.stop(grace=2)
        await up.stop()


async def test_tls_opportunistic_falls_back_to_clear_on_a_broken_handshake(tmp_path: Path) -> None:
    # every connection offers STARTTLS and breaks it: only a clear fallback gets the message through
    up = FakeUpstream(faults=["tls_garbage"] * 2)
    await up.start()
    gw = Gateway(relay_config(tmp_path, up.port, tls="opportunistic"), workers=1)
    await gw.start()
    try:
        mid = await asyncio.to_thread(send, gw.smtp_port, 1)
        await wait_until(lambda: only_row(tmp_path / "store")["state"] == "delivered", timeout=10)
        assert up.ids() == [mid] and not up.accepted[0].tls and up.connections == 2
        assert "deferred" not in events(tmp_path / "store")  # fell back within the attempt
    finally:
        await gw.stop(grace=2)
        await up.stop()


async def test_tls_opportunistic_uses_tls_when_offered(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")  # not trusted by the gateway: opportunistic does not verify
    up = FakeUpstream(tls_context=tls.server_context())
    await up.start()
    gw = Gateway(relay_config(tmp_path, up.port, tls="opportunistic"), workers=1)
    await gw.start()
    try:
        mid = await asyncio.to_thread(send, gw.smtp_port, 1)
        await wait_until(lambda: up.accepted, timeout=10)
        assert up.ids() == [mid] and up.accepted[0].tls and up.clear_data == []
    finally:
        await gw.stop(grace=2)
        await up.stop()
