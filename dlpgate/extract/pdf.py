"""PDF text: pypdfium2 page by page in the worker, pdfminer.six in a child process as the fallback.

Measured (benchmarks/extract_throughput.py, 50-page Japanese CID-font PDF): pypdfium2 ~0.07 s,
pdfminer.six ~1.4 s. pdfium is C: a page is one uninterruptible call, so the clock and the page limit
are checked between pages. pdfminer (pure Python, used only when pdfium refuses a file) can loop
on hostile object graphs, so it runs in a child interpreter with a hard timeout (the rest of the
part's budget) and an address-space cap, and is killed when either runs out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .budget import Budget, Unreadable, corrupt
from .model import ENCRYPTED, LIMIT, UNSUPPORTED, Part

CHILD_MEMORY_BYTES = 2 * 1024 * 1024 * 1024
_FPDF_ERR_PASSWORD = 4


def extract_pdf(path: str, data: bytes, budget: Budget) -> list[Part]:
    try:
        import pypdfium2 as pdfium
    except ImportError:  # pragma: no cover - pypdfium2 is a dependency
        return _pdfminer_parts(path, data, budget)
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _FPDF_ERR_PASSWORD:
            raise Unreadable(ENCRYPTED, "password-protected PDF") from None
        return _pdfminer_parts(path, data, budget)
    try:
        pages: list[str] = []
        n_pages = len(pdf)
        for i in range(min(n_pages, budget.limits.max_pdf_pages)):
            budget.step(0)
            page = pdf[i]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
            budget.charge(len(text))
            pages.append(text)
    except pdfium.PdfiumError:
        return _pdfminer_parts(path, data, budget)
    finally:
        pdf.close()
    return _pages_to_parts(path, pages, n_pages, budget)


def _pages_to_parts(path: str, pages: list[str], n_pages: int, budget: Budget) -> list[Part]:
    text = "\f".join(p.replace("\r\n", "\n").replace("\r", "\n") for p in pages)
    if n_pages and not text.strip("\f \n\t"):
        # Pages that are only pictures (a scanner's output) are pictures: kind "image", judged by the
        # one rule for every picture (scanner.scan_extraction), whatever file format wraps them.
        return [Part(path=path, kind="image", unscannable=UNSUPPORTED,
                     detail=f"PDF of {n_pages} page(s) without a text layer (scanned images?)")]
    parts = [Part(path=path, text=text, kind="pdf")]
    if n_pages > budget.limits.max_pdf_pages:
        parts.append(Part(path=path, kind="pdf", unscannable=LIMIT,
                          detail=f"PDF has {n_pages} pages; only the first {budget.limits.max_pdf_pages} read"))
    return parts


def _pdfminer_parts(path: str, data: bytes, budget: Budget) -> list[Part]:
    pages, n_pages = pdfminer_in_child(data, budget)
    return _pages_to_parts(path, pages, n_pages, budget)


def pdfminer_in_child(data: bytes, budget: Budget) -> tuple[list[str], int]:
    """Run pdfminer.six in a child interpreter, bounded by the part's remaining time and a memory cap."""
    remaining = budget.deadline - time.monotonic()
    if remaining <= 0:
        budget.check_time()
    cmd = child_command(budget.limits.max_pdf_pages)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [_package_root(), env.get("PYTHONPATH", "")] if p)
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=max(remaining, 0.1),
                              preexec_fn=_limit_child, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise Unreadable(LIMIT, f"over the per-part time budget of {budget.limits.part_seconds:g} s") from None
    if proc.returncode == 3:
        raise Unreadable(ENCRYPTED, "password-protected PDF")
    if proc.returncode != 0:
        raise corrupt("unreadable PDF")
    out = proc.stdout.decode("utf-8", "replace")
    head, _, body = out.partition("\n")
    pages = body.split("\f") if body else []
    try:
        n_pages = int(head)
    except ValueError:
        raise corrupt("unreadable PDF") from None
    return pages, n_pages


def child_command(max_pages: int) -> list[str]:
    return [sys.executable, "-m", "dlpgate.extract.pdfminer_child", str(max_pages)]


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _limit_child() -> None:  # pragma: no cover - runs in the child between fork and exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
