"""`dlpgate scan` of one big single-part message: this checkout against another, alternated. Prints figures.

    flock /tmp/dlpgate-bench.lock .venv/bin/python benchmarks/scan_cli_ab.py --other /path/to/checkout \
        [--rounds 6] [--mb 50] [--text dense]

The message is the one benchmarks/archive_throughput.py `--only scan` times (8bit UTF-8, LF line
ends). Each round runs, for each checkout in turn (the order alternating round by round, so load
on a shared machine falls on both alike), what archive_throughput.py does: one child process
that runs the command on a 200-byte message and then on the big one, each call timed there
(start-up paid before both: big - small is the command's own work, CPU seconds and page faults),
and two whole-process runs (big, small: CPU of the child, net of start-up). Both checkouts run
with this interpreter and the same message file. Printed: the median of each figure over rounds
per checkout, in MB per CPU-second, and the median of the per-round ratios this/other.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from archive_throughput import CLI, _message  # noqa: E402
from dense_corpus import corpus as dense_corpus  # noqa: E402
from scan_throughput import corpus_lines  # noqa: E402

TWICE = """
import resource, sys, time
from dlpgate.cli import main
main(["scan", sys.argv[1]])
out = []
for path in sys.argv[1:3]:
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.process_time()
    main(["scan", path])
    out.append((time.process_time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f))
print(out[1][0] - out[0][0], out[1][1] - out[0][1], file=sys.stderr)
"""


def in_one_child(tree: Path, small: Path, big: Path) -> tuple[float, int]:
    """(CPU seconds, page faults) of `dlpgate scan BIG` less `dlpgate scan SMALL` in one warm child."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", TWICE, str(small), str(big)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, check=True, text=True, cwd=tree)
    cpu, faults = done.stderr.strip().splitlines()[-1].split()
    return float(cpu), int(faults)


def whole(tree: Path, path: Path) -> float:
    """CPU seconds of one `dlpgate scan PATH` process."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*CLI, "scan", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=False, cwd=tree)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, type=Path, help="another checkout (e.g. `git archive main`)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--text", choices=("dense", "sparse"), default="dense")
    args = ap.parse_args()
    trees = {"this": ROOT, "other": args.other.resolve()}
    text = dense_corpus(int(args.mb * 1e6)) if args.text == "dense" else "\n".join(corpus_lines(int(args.mb * 1e6)))
    figures: dict[str, dict[str, list[float]]] = {name: {"child": [], "faults": [], "process": []} for name in trees}
    with tempfile.TemporaryDirectory(prefix="dlpgate-bench-") as d:
        small, big = Path(d) / "small.eml", Path(d) / "big.eml"
        small.write_bytes(_message("hello"))
        big.write_bytes(_message(text))
        del text
        size = big.stat().st_size / 1e6
        for r in range(args.rounds):
            for name in (("this", "other") if r % 2 == 0 else ("other", "this")):
                tree = trees[name]
                cpu, faults = in_one_child(tree, small, big)
                figures[name]["child"].append(size / cpu)
                figures[name]["faults"].append(faults)
                figures[name]["process"].append(size / max(whole(tree, big) - whole(tree, small), 1e-9))
    print(f"[dlpgate scan of one {size:.0f} MB single-part message, {args.text} text, {args.rounds} rounds alternated;"
          f" load {os.getloadavg()[0]:.1f}]")
    print(f"  {'':28s} {'this':>10s} {'other':>10s} {'this/other':>11s}")
    for key, label in (("child", "MB/CPU-s inside one child"), ("process", "MB/CPU-s whole process net"),
                       ("faults", "page faults (in the child)")):
        a, b = figures["this"][key], figures["other"][key]
        ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
        print(f"  {label:28s} {statistics.median(a):10.1f} {statistics.median(b):10.1f} {ratio:11.3f}")
    print(f"  per round, inside one child: this {[round(x) for x in figures['this']['child']]}, "
          f"other {[round(x) for x in figures['other']['child']]}")


if __name__ == "__main__":
    main()
