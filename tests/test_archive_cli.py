"""`dlpgate archive` as a user runs it: the progress bar on a terminal (a real pty), plain lines
in a pipe, a real Ctrl-C (SIGINT) then `--resume`, and the report opened in headless chromium."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_archive import SPACED, VALID, mbox, message  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from dlpgate.cli import main; sys.exit(main())"]
CHROMIUM = "/usr/bin/chromium"


def _big_mbox(path: Path, n: int) -> None:
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    msgs = []
    for i in range(n):
        body = "お世話になっております。会議資料を送付します。\n" * 20
        if i % 9 == 0:
            body += f"個人番号 {SPACED}\n"
        to = ["a@gmail.com", "b@vendor.example.com", "c@yahoo.co.jp", "d@partner.example.org"][i % 4]
        msgs.append(message(i, body, to=to, sender=f"staff{i % 6}@city.example.jp",
                            date=f"Mon, 03 {months[i % 12]} {2021 + (i // 12) % 3} 10:00:00 +0900"))
    path.write_bytes(mbox(msgs))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    env["COLUMNS"] = "100"
    return env


@pytest.mark.parametrize("sized", [True, False])
def test_progress_bar_on_a_terminal(tmp_path: Path, sized: bool) -> None:
    path = tmp_path / "a.mbox"
    _big_mbox(path, 300)
    master, slave = pty.openpty()
    if sized:  # as a terminal emulator sets it; a bare pty (serial console, some CI runners) has 0x0
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([*CLI, "archive", str(path)], stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL,
                            env=_env())
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=60) == 1
    text = out.decode("utf-8", "replace")
    assert "\r" in text and "100%|" in text  # tqdm's bar, redrawn in place
    assert "300 msgs, 34 flagged, 0 unreadable" in text
    assert "archive: done:" in text
    assert VALID not in text


def test_plain_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "a.mbox"
    _big_mbox(path, 300)
    proc = subprocess.run([*CLI, "archive", str(path), "--progress-every", "0", "--json"], capture_output=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "\r" not in err and "|" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("archive: ")]
    assert len(lines) > 2  # periodic lines, then the final one
    assert all(" of " in ln and "msgs" in ln and "/s" in ln for ln in lines)
    assert lines[-1].startswith("archive: done:") and "300 msgs, 34 flagged" in lines[-1]
    records = [json.loads(ln) for ln in proc.stdout.decode().splitlines()]
    assert len(records) == 300 and sum(1 for r in records if r["findings"]) == 34


def test_real_ctrl_c_then_resume(tmp_path: Path) -> None:
    path = tmp_path / "a.mbox"
    _big_mbox(path, 6000)
    full, part = tmp_path / "full", tmp_path / "part"
    done = subprocess.run([*CLI, "archive", str(path), "--report", str(full), "--jobs", "2"], capture_output=True,
                          env=_env(), timeout=600)
    assert done.returncode == 1
    proc = subprocess.Popen([*CLI, "archive", str(path), "--report", str(part), "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    results = part / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.stat().st_size > 0):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err
    judged = len((part / "results.jsonl").read_bytes().splitlines())
    assert 0 < judged < 6000
    again = subprocess.run([*CLI, "archive", str(path), "--report", str(part), "--jobs", "2", "--resume"],
                           capture_output=True, env=_env(), timeout=600)
    assert again.returncode == 1
    for name in ("results.jsonl", "report.html", "flagged.csv", "summary.csv"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
                    reason="chromium not installed (CI installs it: .ci/run)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "a.mbox"
    _big_mbox(path, 400)
    report = tmp_path / "report"
    proc = subprocess.run([*CLI, "archive", str(path), "--report", str(report),
                           "--internal-domains", "city.example.jp"], capture_output=True, env=_env(), timeout=300)
    assert proc.returncode == 1, proc.stderr.decode()
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert html.count("<svg") == 4 and VALID not in html
    assert "2021-01-03 10:00" in html  # dates are the judge's own: shown, not digit-masked
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1280,1800",
                          f"--screenshot={shot}", (report / "report.html").as_uri()],
                         capture_output=True, timeout=180)
    assert run.returncode == 0 and shot.exists(), run.stderr.decode()[-2000:]
    keep = os.environ.get("DLPGATE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1800)
    colours = img.getcolors(maxcolors=1 << 20) or []
    counts = {c: n for n, c in colours}
    assert counts.get((0xC2, 0x41, 0x0C), 0) > 2000  # the bars of flagged mail per month
    assert counts.get((0x25, 0x63, 0xEB), 0) > 2000  # detector / sender / domain bars
    assert counts.get((0xB4, 0x23, 0x18), 0) > 500  # personal-mail domains, marked red


def _peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory (MB) of one `dlpgate archive` run and its workers, read by the child
    itself from RUSAGE_SELF / RUSAGE_CHILDREN so other tests' children do not count."""
    code = ("import resource, sys\nfrom dlpgate.cli import main\nrc = main(sys.argv[1:])\n"
            "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\nprint(peak, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=_env(), timeout=600)
    assert proc.returncode in (0, 1), proc.stderr.decode()[-2000:]
    return int(proc.stderr.decode().strip().splitlines()[-1]) / 1024


def test_memory_does_not_grow_with_the_archive(tmp_path: Path) -> None:
    block = message(0, "お世話になっております。資料を送付します。\n" * 60).encode()
    sep = b"From staff@city.example.jp Mon Jan  1 09:00:00 2024\n"
    small, large = tmp_path / "small.mbox", tmp_path / "large.mbox"
    small.write_bytes((sep + block + b"\n\n") * 600)
    with large.open("wb") as f:
        for _ in range(8):
            f.write((sep + block + b"\n\n") * 600)
    assert large.stat().st_size > 7 * small.stat().st_size > 14_000_000
    for jobs in ("1", "2"):
        low = _peak_rss_mb(["archive", str(small), "--jobs", jobs, "--report", str(tmp_path / f"s{jobs}")])
        high = _peak_rss_mb(["archive", str(large), "--jobs", jobs, "--report", str(tmp_path / f"l{jobs}")])
        assert high < low + 30, (jobs, low, high)  # 8x the archive, the same memory
