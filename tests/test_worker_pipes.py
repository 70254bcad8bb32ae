"""Issue 15 items 7 and 8: requests and replies of any size cross the worker pipes under both event
loops, and closing a pool (a rules reload) lets in-flight calls finish however long they take
within their own budget."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dlpgate.workers import WorkerPool

SIZES = [1024, 8 * 1024, 64 * 1024, 200 * 1024, 213 * 1024, 222 * 1024, 256 * 1024, 300 * 1024,
         512 * 1024, 1024 * 1024]


def _noop() -> None:
    pass


def echo(data: bytes) -> bytes:
    return data[::-1]


def tag_init(tag: str) -> None:
    os.environ["DLPGATE_TEST_TAG"] = tag


def slow_tag(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("DLPGATE_TEST_TAG", "")


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(main())
    with asyncio.Runner() as r:
        return r.run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_any_size_crosses_the_pipe_under_both_loops(loop: str) -> None:
    async def main() -> list[str]:
        pool = WorkerPool(2, _noop, ())
        await pool.start()
        errors = []
        try:
            for size in SIZES:
                data = os.urandom(size)
                # alone, and several at once (batched small ones, parallel big ones)
                for got in await asyncio.gather(*(pool.call(echo, data, timeout=60, batchable=size <= 64 * 1024)
                                                  for _ in range(5)), return_exceptions=True):
                    if got != data[::-1]:
                        errors.append(f"{size}: {type(got).__name__} {str(got)[:80]}")
        finally:
            await pool.close()
        return errors

    assert run_on(loop, main) == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_close_lets_a_long_inflight_call_finish_on_the_old_workers(loop: str) -> None:
    async def main() -> tuple[str, str]:
        old = WorkerPool(1, tag_init, ("old",))
        await old.start()
        inflight = asyncio.ensure_future(old.call(slow_tag, 12.0, timeout=60))
        await asyncio.sleep(0.5)
        new = WorkerPool(1, tag_init, ("new",))
        await new.start()
        await old.close()  # what Pipeline.reload does: the old pool drains
        try:
            return await inflight, await new.call(slow_tag, 0, timeout=30)
        finally:
            await new.close()

    assert run_on(loop, main) == ("old", "new")


async def test_gateway_reload_does_not_cut_inflight_judging(tmp_path: Any, sink: Any) -> None:
    from tests.conftest import make_config, running

    async with running(make_config(tmp_path, sink.port)) as gw:
        assert gw.pipeline is not None and gw.pipeline._pool is not None
        old = gw.pipeline._pool
        inflight = asyncio.ensure_future(old.call(slow_tag, 12.0, timeout=60))  # a judgement taking 12 s
        await asyncio.sleep(0.5)
        assert await gw.reload_now()
        assert gw.pipeline._pool is not old
        assert await inflight == ""  # answered by the old worker, not cut as "worker crashed"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_real_serve_judges_messages_of_every_size(tmp_path: Any, sink: Any, loop: str) -> None:
    """A real `dlpgate serve` (DLPGATE_EVENT_LOOP selects the loop) judges 1 KB - 1 MB messages:
    none is held as "scan worker crashed" (the 222 KB newsletter of the issue included)."""
    import subprocess
    import sys

    from tests.conftest import free_port, smtp_data
    from tests.test_crash import write_config

    if loop == "uvloop":
        pytest.importorskip("uvloop")
    port = free_port()
    cfg = write_config(tmp_path, port, sink.port)
    env = dict(os.environ, DLPGATE_EVENT_LOOP=loop)
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "dlpgate.cli", "serve", "--config", str(cfg)], env=env,
                         stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    replies = []
    try:
        for size in SIZES + [222 * 1024] * 4:
            line = b"<p>Newsletter: spring events, opening hours, our new office.</p>\r\n"
            body = line * (size // len(line) + 1)
            raw = (b"From: news@example.jp\r\nTo: reader@example.com\r\nSubject: newsletter\r\n"
                   b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body)
            deadline = time.monotonic() + 60
            while True:
                try:
                    code, reply = smtp_data(port, "news@example.jp", ["reader@example.com"], raw, timeout=120)
                    break
                except OSError:
                    assert p.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
                    assert time.monotonic() < deadline, "gateway did not start"
                    time.sleep(0.2)
            replies.append((size, code, reply))
    finally:
        p.terminate()
        p.wait(timeout=60)
    bad = [r for r in replies if r[1] != 250 or "held" in r[2]]
    assert bad == [], bad
    assert "worker" not in (tmp_path / "gateway.log").read_text()
