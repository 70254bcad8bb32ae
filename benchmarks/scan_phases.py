"""Where the time of `dlpgate scan` of one big single-part message goes, phase by phase. Prints; asserts nothing.

    flock /tmp/dlpgate-bench.lock .venv/bin/python benchmarks/scan_phases.py [--mb 50] [--repeat 5] [--text dense]

The message is the one benchmarks/archive_throughput.py `--only scan` times end to end (8bit UTF-8,
LF line ends, as saved to disk). Each phase is the call `dlpgate scan` makes, timed alone in this
process in the order the command runs it: CPU milliseconds (time.process_time, best of --repeat)
and the page faults of that best run -- a fresh page costs about 2 us here, so a copy of 50 MB is
20-30 ms before a byte is read. `gate encode` is part of the scanner (the hyperscan gate encodes
the text to UTF-16-LE), shown apart because it is a copy; `scanner` is scan_extraction whole,
that encode included. The last line is offline_scan.run (rules already loaded), whose difference
from the sum is the loop and what no phase names.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from archive_throughput import _message  # noqa: E402
from dense_corpus import corpus as dense_corpus  # noqa: E402
from scan_throughput import corpus_lines  # noqa: E402

from dlpgate import offline_scan  # noqa: E402
from dlpgate.extract import mime  # noqa: E402
from dlpgate.extract.budget import Budget  # noqa: E402
from dlpgate.extract.files import text_parts  # noqa: E402
from dlpgate.extract.model import ExtractLimits  # noqa: E402
from dlpgate.extract.textdecode import decode_text  # noqa: E402
from dlpgate.policy import MessageFacts, Policy  # noqa: E402
from dlpgate.scan.scanner import Scanner  # noqa: E402
from dlpgate.terminal import for_terminal  # noqa: E402

T = TypeVar("T")


class Phases:
    """Best CPU time (and that run's page faults) of each named call, in first-call order."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[float, int]] = {}

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.process_time()
        out = fn()
        cpu = time.process_time() - t
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        if name not in self.best or cpu < self.best[name][0]:
            self.best[name] = (cpu, faults)
        return out


def extract_phases(t: Phases, data: bytes) -> None:
    """The steps of extract_message that cost anything on a big single-part body, one by one."""
    msg = t("MIME parse", lambda: mime.parse(data))
    body = t("body buffer", lambda: mime.body_buffer(msg))
    charset = msg.get_content_charset()
    body_text = t("charset decode", lambda: decode_text(body, charset))
    t("PGP check (text_parts)", lambda: text_parts("body", body_text, "text"))


def one_run(t: Phases, path: Path, scanner: Scanner, policy: Policy) -> None:
    """The calls `dlpgate scan PATH --json` makes, each timed (locals are freed on return)."""
    data = t("read the file", path.read_bytes)
    to, cc, bcc, sender = t("header recipients", lambda: offline_scan._header_recipients(data))
    extract_phases(t, data)
    extraction = t("extract_message (all of it)", lambda: mime.extract_message(data, Budget(ExtractLimits())))
    text = extraction.parts[-1].text
    t("  gate encode (in scanner)", lambda: text.encode("ascii") if text.isascii() else text.encode("utf_16_le"))
    result = t("scanner (scan_extraction)", lambda: scanner.scan_extraction(extraction))
    facts = MessageFacts(sender=sender, recipients=tuple(dict.fromkeys(to + cc + bcc)), subject=extraction.subject,
                         header_to=extraction.header_to, header_cc=extraction.header_cc,
                         attachments=extraction.attachments)
    t("policy decide + explain", lambda: (policy.decide(result, facts), policy.explain(result, facts)))
    record, _ = offline_scan._decide(extraction, facts, scanner, policy, True)
    t("JSON line", lambda: for_terminal(json.dumps({"path": str(path), **record}, ensure_ascii=False)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--text", choices=("dense", "sparse"), default="dense")
    args = ap.parse_args()
    text = dense_corpus(int(args.mb * 1e6)) if args.text == "dense" else "\n".join(corpus_lines(int(args.mb * 1e6)))
    scanner, policy = Scanner.load(engine="hyperscan"), Policy.load(None, ())
    t = Phases()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.eml"
        path.write_bytes(_message(text))
        del text
        size = path.stat().st_size / 1e6
        for _ in range(args.repeat):
            one_run(t, path, scanner, policy)
            gc.collect()
            t("offline_scan.run (whole)", lambda: offline_scan.run([str(path)], as_json=True, rules_dir=None,
                                                                   out=io.StringIO()))
            gc.collect()
    print(f"[dlpgate scan of one {size:.0f} MB single-part message, {args.text} text: CPU ms per phase, best of {args.repeat}]")
    for name, (cpu, faults) in t.best.items():
        print(f"  {name:30s} {cpu * 1000:8.1f} ms  {faults:7d} page faults")
    whole = t.best["offline_scan.run (whole)"][0]
    outside = whole - t.best["scanner (scan_extraction)"][0]
    print(f"  end to end {size / whole:.1f} MB per CPU-second; outside the scanner {outside * 1000:.0f} ms "
          f"({outside / whole:.0%} of the run)")


if __name__ == "__main__":
    main()
