"""The scanner of this checkout against another checkout's, alternated on the same machine. Prints figures.

    .venv/bin/python benchmarks/scan_ab.py --other /path/to/old/checkout [--rounds 5] [--mb 5] [--inproc]

Each round runs one child process per checkout (order alternating round by round, so load on a
shared machine falls on both alike); a child builds the corpus of benchmarks/scan_throughput.py
(the same bytes for both), then measures, best of three: the scanner on one large text, on many
~2.7 KB messages, and on an extracted 20,000-row resident spreadsheet (scan only, extraction not
timed). The medians over rounds and the ratio this/other are printed.

With `--inproc` both scanners run in one process (the other checkout's package is copied under the
name `dlpgate_other`), each measurement alternating between them back to back, and the median of
the per-round ratios is printed: on a machine shared with other work this is far steadier than
comparing processes that ran at different moments. It also times one text of the dense business
corpus (benchmarks/dense_corpus.py, `--mb` MB), after checking that both scanners find the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(tree: str, mb: float, rows: int) -> None:
    sys.path.insert(0, tree)
    from dlpgate.extract import extract_file  # the tree's own code, imported before the corpus module
    from dlpgate.scan.scanner import Scanner

    sys.path.insert(0, str(HERE))
    import scan_throughput as st

    lines = st.corpus_lines(int(mb * 1_000_000))
    big = "\n".join(lines)
    messages = st.as_messages(lines)
    size = len(big.encode()) / 1e6
    scanner = Scanner.load(Path(tree) / "rules", engine="hyperscan")
    sheet = extract_file("住民.xlsx", st.spreadsheet(rows))

    def best(fn: object) -> float:
        out = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            out = min(out, time.perf_counter() - t0)
        return out

    print(json.dumps({
        "one_text_mb_s": size / best(lambda: scanner.scan("body", big)),
        "messages_mb_s": size / best(lambda: [scanner.scan("body", m) for m in messages]),
        "sheet_scan_s": best(lambda: scanner.scan_extraction(sheet)),
    }))


def _other_package(tree: str) -> object:
    """The other checkout's `dlpgate` imported as `dlpgate_other` (a renamed copy in a temp dir)."""
    import re
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="scan_ab_"))
    dst = tmp / "dlpgate_other"
    shutil.copytree(Path(tree) / "dlpgate", dst)
    for f in dst.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        text = re.sub(r"\bdlpgate(?=[. ])", "dlpgate_other", text)
        f.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(tmp))
    import importlib

    return importlib.import_module("dlpgate_other.scan.scanner")


def inproc(other_tree: str, rounds: int, mb: float, rows: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    from dlpgate.extract import extract_file
    from dlpgate.scan.scanner import Scanner

    sys.path.insert(0, str(HERE))
    import scan_throughput as st

    other_mod = _other_package(other_tree)
    this = Scanner.load(HERE.parent / "rules", engine="hyperscan")
    other = other_mod.Scanner.load(Path(other_tree) / "rules", engine="hyperscan")  # type: ignore[attr-defined]
    lines = st.corpus_lines(int(mb * 1_000_000))
    big = "\n".join(lines)
    messages = st.as_messages(lines)
    import importlib

    # Each scanner scans Parts built by its own package: the scanner's fast paths test
    # `isinstance(rows, Rows)` against its own Rows class, so Parts of the other package send it
    # down the slow fallback (an A/A run of one tree against itself read 0.81 on the sheet).
    other_extract = importlib.import_module("dlpgate_other.extract")
    data = st.spreadsheet(rows)
    sheets = {id(this): extract_file("住民.xlsx", data), id(other): other_extract.extract_file("住民.xlsx", data)}
    from dense_corpus import corpus as dense_corpus

    dense = dense_corpus(int(mb * 1_000_000))
    if repr(this.scan("body", dense)) != repr(other.scan("body", dense)):  # (two packages' classes)
        print("the two scanners differ on the dense corpus")
    loads = {
        "one_text": lambda sc: sc.scan("body", big),
        "dense_text": lambda sc: sc.scan("body", dense),
        "messages": lambda sc: [sc.scan("body", m) for m in messages],
        "sheet_scan": lambda sc: sc.scan_extraction(sheets[id(sc)]),
    }
    ratios: dict[str, list[float]] = {k: [] for k in loads}
    times: dict[str, dict[str, list[float]]] = {k: {"this": [], "other": []} for k in loads}
    for r in range(rounds):
        for key, fn in loads.items():
            pair = [("this", this), ("other", other)] if r % 2 == 0 else [("other", other), ("this", this)]
            got: dict[str, float] = {}
            for name, sc in pair:
                t0 = time.process_time()  # CPU time of this process: other work on the machine counts less
                fn(sc)
                got[name] = time.process_time() - t0
                times[key][name].append(got[name])
            ratios[key].append(got["this"] / got["other"])
    print(f"{rounds} rounds in one process, {mb:g} MB corpus, {rows}-row sheet; CPU time this/other "
          "(median of per-round ratios; > 1 means this checkout is slower):")
    for key in loads:
        med = statistics.median(ratios[key])
        this_t = statistics.median(times[key]["this"])
        other_t = statistics.median(times[key]["other"])
        print(f"  {key:11s} this {this_t:8.4f} s  other {other_t:8.4f} s  ratio {med:5.3f}  "
              f"(quartiles {statistics.quantiles(ratios[key], n=4)[0]:.3f}-{statistics.quantiles(ratios[key], n=4)[2]:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=False)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--inproc", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.mb, args.rows)
        return
    if not args.other:
        ap.error("--other DIR is required")
    if args.inproc:
        inproc(args.other, args.rounds, args.mb, args.rows)
        return
    trees = {"this": str(HERE.parent), "other": str(Path(args.other).resolve())}
    results: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for r in range(args.rounds):
        order = ["this", "other"] if r % 2 == 0 else ["other", "this"]
        for name in order:
            out = subprocess.run([sys.executable, __file__, "--child", trees[name], "--mb", str(args.mb),
                                  "--rows", str(args.rows)], capture_output=True, text=True, env=env, timeout=1800,
                                 check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.rounds} alternated rounds, {args.mb:g} MB corpus, {args.rows}-row sheet; medians:")
    for key in ("one_text_mb_s", "messages_mb_s", "sheet_scan_s"):
        this = statistics.median(x[key] for x in results["this"])
        other = statistics.median(x[key] for x in results["other"])
        print(f"  {key:15s} this {this:9.3f}  other {other:9.3f}  this/other {this / other:5.2f}")


if __name__ == "__main__":
    main()
