"""A real full disk under a real `dlpgate serve`: the store sits on a small tmpfs mounted in a
private mount namespace (`unshare -Urm`, no root needed where user namespaces are allowed).
The free space is swept from nothing upwards, so ENOSPC strikes the spool write, its fsync and
the SQLite commit in turn; every attempt must end in a 250 with the message stored, or a 451
with nothing stored — then space returns and the same gateway accepts and delivers again."""

from __future__ import annotations

import errno
import json
import os
import shutil
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Sink, free_port
from tests.test_hardening_support import message

REPO = Path(__file__).resolve().parent.parent


def _can_mount() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = Path(f"/tmp/dlpgate-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        r = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                           capture_output=True, timeout=10)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        probe.rmdir()


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs unshare -Urm (user + mount namespaces)")


def fill(path: Path) -> int:
    """Append zeros to `path` until the filesystem is full; its size then."""
    with open(path, "ab", buffering=0) as f:  # unbuffered: ENOSPC surfaces at the write, not at close
        for size in (65536, 4096, 512, 1):  # down to the last partial page
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return path.stat().st_size


def test_disk_full_sweep_answers_451_keeps_nothing_and_recovers(tmp_path: Path, sink: Sink) -> None:
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    cfg = tmp_path / "dlpgate.toml"
    cfg.write_text(f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "gw.test"
[relay]
upstream = "127.0.0.1:{sink.port}"
tls = "off"
[delay]
seconds = 3600
[store]
path = "{store}"
[metrics]
listen = ""
[quarantine]
notify = false
""")
    script = f"mount -t tmpfs -o size=4m tmpfs {store} && exec {sys.executable} -m dlpgate.cli serve --config {cfg}"
    gw = subprocess.Popen(["unshare", "-Urm", "sh", "-c", script], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
                break
            except OSError:
                assert gw.poll() is None and time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        inside = Path(f"/proc/{gw.pid}/root") / str(store).lstrip("/")  # the tmpfs, seen from here
        assert os.statvfs(inside).f_blocks * os.statvfs(inside).f_frsize <= 4 * 2**20
        filler = inside / "filler"
        data = message("x", "本文\r\n" + ("y" * 70 + "\r\n") * 850)  # ~60 KB
        codes: list[int] = []
        c = smtplib.SMTP("127.0.0.1", port, timeout=10)
        for step in range(0, 40):
            full = fill(filler)
            os.truncate(filler, max(0, full - step * 4096))
            try:
                assert c.sendmail("a@example.jp", ["b@example.com"], data) == {}
                codes.append(250)
            except smtplib.SMTPDataError as e:
                codes.append(e.smtp_code)
            except smtplib.SMTPServerDisconnected:
                raise AssertionError(f"gateway dropped the session at step {step}: "
                                     f"{gw.stderr.read().decode()[-2000:] if gw.poll() is not None and gw.stderr else ''}") from None
        assert set(codes) <= {250, 451}, codes
        assert codes[0] == 451 and 250 in codes, codes  # the sweep hit both sides of the edge
        filler.unlink()  # space returns
        c.sendmail("a@example.jp", ["b@example.com"], data)
        c.quit()
        accepted = codes.count(250) + 1
        # small messages live in spool segments: every accepted one's bytes are there, intact; a
        # refused attempt leaves no file of its own and no row (its partial append names nothing)
        assert list((inside / "spool").glob("*/*.eml")) == []
        check = ("import hashlib, sys\nfrom dlpgate.store import Store\nst = Store(sys.argv[1])\n"
                 "rows = [st.get(r['id']) for r in st.list()]\n"
                 "print(len(rows), sum(hashlib.sha256(st.read_spool(r['id'])).hexdigest() == r['sha256'] for r in rows))")
        out = subprocess.run(["nsenter", "-t", str(gw.pid), "-U", "-m", "--preserve-credentials",
                              sys.executable, "-c", check, str(store)],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [str(accepted)] * 2, (out.stdout, codes)  # all there, all intact
        # the product's CLI, run inside the gateway's namespaces, sees the store it wrote
        out = subprocess.run(["nsenter", "-t", str(gw.pid), "-U", "-m", "--preserve-credentials",
                              sys.executable, "-m", "dlpgate.cli", "outbox", "list", "--json", "--config", str(cfg)],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.strip()]
        assert len(rows) == accepted, (len(rows), codes)  # one row per 250: no partial rows
        assert gw.poll() is None  # still serving
    finally:
        gw.terminate()
        try:
            gw.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gw.kill()
