"""Issue 15 item 4: a gateway that cannot load a part of judging refuses to start; it never
judges mail clean without it. Each import is blocked in a real `dlpgate serve` (a module of that
name on PYTHONPATH that raises ImportError, inherited by the judging workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlpgate.pipeline import REQUIRED_MODULES
from tests.conftest import Sink, free_port, smtp_data
from tests.test_approval_support import mail_with_numbers, synthetic_numbers
from tests.test_crash import write_config

DLPGATE = [sys.executable, "-m", "dlpgate.cli"]
THIRD_PARTY = [m for m in REQUIRED_MODULES if not m.startswith("dlpgate.")]


def blocker(tmp: Path, module: str) -> Path:
    """A directory that shadows `module` (its top-level package) with one that cannot import."""
    d = tmp / "blocked"
    top = module.split(".")[0]
    target = d / top / "__init__.py" if "." in module else d / f"{top}.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"raise ImportError('{top} blocked by the test')\n")
    return d


def env_with(path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize("module", THIRD_PARTY)
def test_serve_refuses_to_start_without_a_judging_module(tmp_path: Path, module: str) -> None:
    cfg = write_config(tmp_path, free_port(), free_port())
    p = subprocess.run([*DLPGATE, "serve", "--config", str(cfg)], env=env_with(blocker(tmp_path, module)),
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 2, p.stderr[-2000:]
    # one plain error line (start-up may log what it did before it): no traceback
    errors = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("dlpgate:")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert module.split(".")[0] in errors[0] and "judging" in errors[0]


def test_without_hyperscan_the_gate_falls_back_and_still_judges(tmp_path: Path, sink: Sink) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, sink.port)
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([*DLPGATE, "serve", "--config", str(cfg)], env=env_with(blocker(tmp_path, "hyperscan")),
                         stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                numbers = synthetic_numbers(3, seed=44)
                raw = mail_with_numbers("tanaka@soumu.example.jp", ["partner@example.com"], numbers)
                code, reply = smtp_data(port, "tanaka@soumu.example.jp", ["partner@example.com"], raw)
                break
            except OSError:
                assert p.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.2)
        assert code == 250 and "held for approval" in reply, reply
    finally:
        p.terminate()
        p.wait(timeout=30)


async def test_when_no_judging_worker_can_start_every_data_gets_451(tmp_path: Path, sink: Sink) -> None:
    import asyncio
    import signal

    from tests.conftest import make_config, running

    async with running(make_config(tmp_path, sink.port)) as gw:
        assert gw.pipeline is not None and gw.pipeline._pool is not None
        pool = gw.pipeline._pool
        broken = tmp_path / "broken-rules"
        broken.mkdir()
        (broken / "detectors.toml").write_text("this is = not [toml\n")
        pool.initargs = (str(broken), *pool.initargs[1:])  # what a replacement worker now loads
        for slot in list(pool._slots):
            os.kill(slot.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pool._slots or not pool.broken:
            assert time.monotonic() < deadline, "the replacement did not fail"
            await asyncio.sleep(0.1)
        raw = mail_with_numbers("tanaka@soumu.example.jp", ["partner@example.com"], synthetic_numbers(1))
        code, reply = await asyncio.to_thread(smtp_data, gw.smtp_port, "tanaka@soumu.example.jp",
                                              ["partner@example.com"], raw)
        assert code == 451, reply
        assert not gw.healthy()  # /healthz tells the monitoring
    assert sink.handler.messages == []
