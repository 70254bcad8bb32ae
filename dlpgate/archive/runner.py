"""`dlpgate archive`: stream archives through a process pool, in order, with a checkpoint.

The parent walks each archive (readers.py: offsets and file names, never message bytes), groups
the Items into small batches and keeps at most 3 batches per worker in flight: memory is bounded
by the workers, not by the archive. Results are taken back in archive order, so the JSON lines
come out in archive order and the checkpoint is simply "everything before this position is done".

With `--report DIR` every result line goes to DIR/results.jsonl and DIR/checkpoint.json records,
per archive, the position reached and the length of results.jsonl that matches it (written every
2 seconds and on Ctrl-C). `--resume` cuts results.jsonl back to that length and each reader starts
at its position, so the report of a resumed run is the report of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from dlpgate.errors import DlpgateError, InputError
from dlpgate.masking import mask_text
from dlpgate.terminal import for_terminal

from . import judge
from .progress import Progress
from .readers import Archive, Item, open_archive

BATCH_ITEMS = 64
BATCH_BYTES = 4 << 20
IN_FLIGHT_PER_WORKER = 3
CHECKPOINT_EVERY = 2.0
RESULTS = "results.jsonl"
CHECKPOINT = "checkpoint.json"


@dataclass(frozen=True)
class Options:
    jobs: int = 1
    since: datetime | None = None
    until: datetime | None = None
    report_dir: str | None = None
    resume: bool = False
    as_json: bool = False
    rules_dir: str | None = None
    internal_domains: tuple[str, ...] = ()
    progress_every: float = 10.0
    tty: bool | None = None  # None: ask the stream


class _Pool:
    """The judging processes. Even with --jobs 1 they are separate processes: the C parsers
    (pdfium, calamine, libpff's neighbours) read hostile files, and a crash must cost one message,
    not the run. A batch whose worker died is judged again message by message in a fresh pool;
    the message that kills a worker again is reported as unreadable."""

    def __init__(self, jobs: int, settings: judge.Settings) -> None:
        self.jobs = jobs
        self.settings = settings
        self.executor = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.jobs, initializer=judge.init, initargs=(self.settings,))

    def submit(self, items: list[Item]) -> Future[Any]:
        try:
            return self.executor.submit(judge.judge_batch, items)
        except BrokenProcessPool:
            f: Future[Any] = Future()
            f.set_exception(BrokenProcessPool("pool broken"))
            return f

    def results(self, items: list[Item], future: Future[Any]) -> list[dict[str, Any] | None]:
        try:
            return list(future.result())
        except BrokenProcessPool:
            pass
        out: list[dict[str, Any] | None] = []
        for item in items:
            self._renew()
            try:
                out.extend(self.executor.submit(judge.judge_batch, [item]).result())
            except BrokenProcessPool:
                out.append(judge.damaged(item.location, "the reader crashed on this message (worker process died)",
                                         item.size))
        self._renew()
        return out

    def _renew(self) -> None:
        if getattr(self.executor, "_broken", False):
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._new()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


class _Stop:
    """The first Ctrl-C (SIGINT) asks the run to stop after the message in hand, so the results and
    the checkpoint stay in step; a second one interrupts at once (the default handler is back)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._old if self._old is not None else signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run(paths: Sequence[str], options: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        return _run(list(paths), options, out, err)
    except DlpgateError as exc:
        # masked: it may quote a path named after its content
        print(for_terminal(mask_text(f"dlpgate archive: {exc}")), file=err)
        return 2


def _batches(archive: Archive, position: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    size = 0
    for item in archive.items(position):
        batch.append(item)
        size += item.size
        if len(batch) >= BATCH_ITEMS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Checkpoint:
    """DIR/checkpoint.json + DIR/results.jsonl (see module doc)."""

    def __init__(self, directory: str, archives: list[Archive], options: Options) -> None:
        self.dir = Path(directory)
        self.identity = {
            "archives": [os.path.abspath(a.path) for a in archives],
            "since": options.since.isoformat() if options.since else "",
            "until": options.until.isoformat() if options.until else "",
            "internal_domains": sorted(options.internal_domains),
        }
        self.positions = [0] * len(archives)
        self.complete = [False] * len(archives)
        self.results: Any = None
        self.last = 0.0

    def open(self, resume: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / CHECKPOINT
        results = self.dir / RESULTS
        length = 0
        if resume:
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise InputError(f"--resume: no checkpoint in {self.dir}") from None
            except (OSError, ValueError) as exc:
                raise InputError(f"--resume: unreadable checkpoint in {self.dir} ({type(exc).__name__})") from None
            if state.get("identity") != self.identity:
                raise InputError(f"--resume: the checkpoint in {self.dir} is for other archives or options")
            self.positions = [int(p) for p in state["positions"]]
            self.complete = [bool(c) for c in state["complete"]]
            length = int(state["results_bytes"])
        self.results = open(results, "a+b")  # noqa: SIM115 - closed by close()
        self.results.truncate(length)  # a crash after a write but before its checkpoint: cut back
        self.results.seek(length)

    def add(self, record: dict[str, Any]) -> None:
        self.results.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < CHECKPOINT_EVERY:
            return
        self.last = now
        self.results.flush()
        os.fsync(self.results.fileno())
        state = {"identity": self.identity, "positions": self.positions, "complete": self.complete,
                 "results_bytes": self.results.tell()}
        tmp = self.dir / (CHECKPOINT + ".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.dir / CHECKPOINT)

    def close(self) -> None:
        if self.results is not None:
            self.results.close()


def _run(paths: list[str], options: Options, out: TextIO, err: TextIO) -> int:
    if not paths:
        raise InputError("no PATH given")
    if options.jobs < 1:
        raise InputError("--jobs must be at least 1")
    if options.resume and not options.report_dir:
        raise InputError("--resume needs --report DIR (the checkpoint is kept there)")
    archives = [open_archive(p) for p in paths]
    settings = judge.Settings(options.rules_dir, options.internal_domains, options.since, options.until)
    judge.init(settings, in_pool=False)  # here first: a bad rules directory is exit 2 before any work, and
    # the forked workers find the compiled databases already made

    checkpoint = _Checkpoint(options.report_dir, archives, options) if options.report_dir else None
    if checkpoint is not None:
        checkpoint.open(options.resume)
    positions = checkpoint.positions if checkpoint else [0] * len(archives)
    complete = checkpoint.complete if checkpoint else [False] * len(archives)
    total = sum(a.size for a in archives)
    done = sum(a.size if complete[i] else a.progress_at(positions[i]) for i, a in enumerate(archives))
    progress = Progress(total, done, stream=err, every=options.progress_every, tty=options.tty)
    with _Stop() as stop:
        pool = _Pool(options.jobs, settings)
        try:
            counts = _scan(archives, positions, complete, pool, options, checkpoint, progress, stop, out)
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, keep what is checkpointed
            stop.requested = True
            counts = None
        if stop.requested:
            pool.shutdown(wait=False, cancel_futures=True)
            _stop_workers(pool)
            if checkpoint is not None:
                if counts is not None:
                    checkpoint.save(force=True)
                checkpoint.close()
            progress.close(finished=False)
            where = f"; `--resume --report {options.report_dir}` continues" if options.report_dir else ""
            print(f"dlpgate archive: interrupted{where}", file=err)
            return 130
        pool.shutdown(wait=True)
    assert counts is not None
    flagged, _unreadable = counts
    progress.close(finished=True)
    if checkpoint is not None:
        checkpoint.save(force=True)
        checkpoint.close()
        from .report import write_report

        summary = write_report(options.report_dir or "", internal_domains=options.internal_domains,
                               rules_dir=options.rules_dir)
        flagged = summary.flagged
        print(f"dlpgate archive: report in {Path(options.report_dir or '', 'report.html')}", file=err)
    return 1 if flagged else 0


def _scan(archives: list[Archive], positions: list[int], complete: list[bool], pool: _Pool, options: Options,
          checkpoint: _Checkpoint | None, progress: Progress, stop: _Stop, out: TextIO) -> tuple[int, int]:
    """Judge every archive from its position; returns (flagged, unreadable) of this run. Returns
    early, with the checkpoint at the last result taken, when a stop is requested."""
    counts = [0, 0]  # flagged, unreadable

    def take(index: int, window: deque[tuple[list[Item], Future[Any]]]) -> None:
        items, future = window.popleft()
        for item, result in zip(items, pool.results(items, future), strict=True):
            if result is not None:
                if checkpoint is not None:
                    checkpoint.add(result)
                if "skipped" not in result:
                    if result["verdict"] == "unreadable":
                        counts[1] += 1
                    elif result["findings"]:
                        counts[0] += 1
                    _emit(result, options.as_json, out)
            progress.update(item.size, result)
            positions[index] = item.position
            if stop.requested:  # the rest of this batch is judged again on --resume
                break
        if checkpoint is not None:
            checkpoint.save()

    limit = IN_FLIGHT_PER_WORKER * options.jobs
    for index, archive in enumerate(archives):
        if complete[index]:
            continue
        window: deque[tuple[list[Item], Future[Any]]] = deque()
        for batch in _batches(archive, positions[index]):
            if stop.requested:
                break
            window.append((batch, pool.submit(batch)))
            while window and not stop.requested and (len(window) >= limit or window[0][1].done()):
                take(index, window)
        while window and not stop.requested:
            take(index, window)
        if stop.requested:
            if checkpoint is not None:
                checkpoint.save(force=True)
            return counts[0], counts[1]
        complete[index] = True
        if checkpoint is not None:
            checkpoint.save(force=True)
    return counts[0], counts[1]


def _stop_workers(pool: _Pool) -> None:
    """Workers ignore SIGINT; a batch in progress is not waited for (its items are not checkpointed)."""
    processes = getattr(pool.executor, "_processes", None) or {}
    for proc in list(processes.values()):
        try:
            proc.terminate()
        except Exception:
            pass
    for proc in list(processes.values()):
        proc.join(timeout=5)


def _emit(result: dict[str, Any], as_json: bool, out: TextIO) -> None:
    """One result on stdout; control and bidi characters from senders are shown, never obeyed."""
    out.write(for_terminal(_text(result, as_json)))


def _text(result: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(result, ensure_ascii=False) + "\n"
    if result["verdict"] == "unreadable":
        return f"{result['location']}: unreadable: {result.get('error', '')}\n"
    if not result["findings"]:
        return ""
    lines = [f"{result['location']}: {result['verdict']} (records: {result['records']}) "
             f"{result.get('date', '')} {result.get('sender', '')}".rstrip()]
    for f in result["findings"]:
        lines.append(f"  {f['severity']:6s} {f['rule']} x{f['count']} in {f['part']}" + (f" [{f['sample']}]" if f["sample"] else ""))
    return "\n".join(lines) + "\n"
