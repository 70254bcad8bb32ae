"""Retrospective audit of mail archives (`dlpgate archive`): mbox, Maildir, MH, .eml trees,
Outlook .msg and .pst/.ost, judged with the gateway's own extraction, scanner and policy.

    readers.py   PATH -> Items (where each message's bytes are), with checkpoint positions
    pst.py       Outlook .pst/.ost through libpff (pypff)
    judge.py     worker side: Item -> masked result record
    runner.py    the process pool fed in order, the checkpoint, JSON lines, the exit code
    progress.py  bar on a terminal, plain lines elsewhere
    report.py    report.html (inline SVG) + flagged.csv + summary.csv from results.jsonl
"""

from __future__ import annotations

from .runner import Options, run

__all__ = ["Options", "run"]
