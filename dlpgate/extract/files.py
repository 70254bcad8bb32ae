"""One file's bytes -> Parts, by what the bytes are (sniff), recursing into containers.

This is the single place where a reader's failure becomes a Part with `unscannable` set: every
reader raises `Unreadable` (or anything else, which counts as corrupt), and nothing escapes.
Containers (zip, OOXML embeddings, attached messages) share one nesting-depth limit.
"""

from __future__ import annotations

import zipfile

from .budget import Budget, Unreadable, corrupt
from .delimited import extract_delimited
from .htmltext import html_to_text
from .legacy import extract_cfb
from .model import CORRUPT, ENCRYPTED, LIMIT, UNSUPPORTED, Part
from .pdf import extract_pdf
from .sniff import archive_kind, sniff
from .spreadsheet import extract_spreadsheet
from .textdecode import decode_text
from .wordml import extract_docx, extract_pptx
from .zipread import member_name, open_zip, read_member

PGP_MESSAGE = "-----BEGIN PGP MESSAGE-----"


def extract_blob(path: str, data: bytes, budget: Budget, depth: int, kind: str | None = None) -> list[Part]:
    """Parts of one file at `path`; never raises. `kind`: what sniff said of these bytes, when the
    caller has asked already (sniffing a zip opens it)."""
    known = kind or "unknown"
    try:
        if kind is None:
            known = sniff(data, path.rsplit("/", 1)[-1])
        return _by_kind(known, path, data, budget, depth)
    except Unreadable as exc:
        return [Part(path=path, kind=known, unscannable=exc.reason, detail=exc.detail)]
    except RecursionError:
        return [Part(path=path, kind=known, unscannable=LIMIT, detail=f"{known} nested too deeply")]
    except MemoryError:
        return [Part(path=path, kind=known, unscannable=LIMIT, detail=f"{known} too large for memory")]
    except Exception as exc:  # any reader bug or library error on hostile input: fail closed, never crash
        return [Part(path=path, kind=known, unscannable=CORRUPT, detail=f"{known} reader failed ({type(exc).__name__})")]


def text_parts(path: str, text: str, kind: str) -> list[Part]:
    parts = [Part(path=path, text=text, kind=kind)]
    if PGP_MESSAGE in text:
        parts.append(Part(path=path, kind=kind, unscannable=ENCRYPTED, detail="PGP-encrypted block"))
    return parts


def _by_kind(kind: str, path: str, data: bytes, budget: Budget, depth: int) -> list[Part]:
    if kind == "empty":
        return [Part(path=path, kind=kind)]
    if kind == "text":
        text = decode_text(data)
        budget.charge(len(text))
        return text_parts(path, text, kind)
    if kind == "csv":
        text, tables = extract_delimited(data, path, budget)
        budget.charge(len(text))
        return [Part(path=path, text=text, tables=tables, kind=kind)]
    if kind == "html":
        text, tables = html_to_text(decode_text(data), budget, path)
        budget.charge(len(text))
        return [Part(path=path, text=text, tables=tables, kind=kind)]
    if kind == "pdf":
        return extract_pdf(path, data, budget)
    if kind == "cfb":
        return extract_cfb(path, data, budget, depth)
    if kind in ("xlsx", "ods", "docx", "pptx", "zip", "eml"):
        enter_container(kind, depth, budget)
    if kind == "eml":
        from .mime import walk_message

        return walk_message(data, f"{path}/", budget, depth + 1, attachments=None)
    if kind == "zip":
        return extract_zip(path, data, budget, depth)
    if kind in ("xlsx", "ods", "docx", "pptx"):
        zf = open_zip(data, kind)
        if kind == "docx":
            parts = extract_docx(path, zf, budget)
        elif kind == "pptx":
            parts = extract_pptx(path, zf, budget)
        else:
            parts = extract_spreadsheet(path, data, zf, budget, kind)
        parts = parts + _embeddings(path, zf, budget, depth)
        if not parts:  # a document whose structure names nothing readable (damaged rels): fail closed
            raise corrupt(f"{kind} with no readable sheet, slide or body")
        return parts
    if kind == "image":
        raise Unreadable(UNSUPPORTED, "image (no text extracted)")
    if kind == "archive":
        return _archive(path, data, budget, depth)
    if kind == "tnef":
        enter_container(kind, depth, budget)
        from .tnef import tnef_contents

        body, members = tnef_contents(data, budget)
        parts = text_parts(f"{path}/body", body, "text") if body.strip() else []
        for name, member in members:
            parts.extend(extract_blob(f"{path}/{name}", member, budget, depth + 1))
        return parts or [Part(path=path, kind=kind)]
    raise Unreadable(UNSUPPORTED, "binary data of unknown format")


def _archive(path: str, data: bytes, budget: Budget, depth: int) -> list[Part]:
    """gzip, bzip2, xz, tar and 7z are read (archives.py); rar, cab and lzh are not: `unsupported`
    (no reader in Python or Debian that the worker could run without a non-free unrar)."""
    kind = archive_kind(data)
    if kind == "gzip":
        enter_container(kind, depth, budget)
        from .archives import gunzip

        name, inner = gunzip(path, data, budget)
        return extract_blob(f"{path}/{name}", inner, budget, depth + 1)
    if kind in ("bzip2", "xz"):
        enter_container(kind, depth, budget)
        from .archives import unstream

        name, inner = unstream(kind, path, data, budget)
        return extract_blob(f"{path}/{name}", inner, budget, depth + 1)
    if kind == "7z":
        enter_container(kind, depth, budget)
        from .archives import sevenzip_members

        parts: list[Part] = []
        for name, member in sevenzip_members(data, budget):
            budget.members += 1
            parts.extend(extract_blob(f"{path}/{name}", member, budget, depth + 1))
        return parts or [Part(path=path, kind="7z")]
    if kind == "tar":
        enter_container(kind, depth, budget)
        from .archives import tar_members

        parts = []
        for name, member in tar_members(data, budget):
            budget.members += 1
            parts.extend(extract_blob(f"{path}/{name}", member, budget, depth + 1))
        return parts or [Part(path=path, kind="tar")]
    raise Unreadable(UNSUPPORTED, f"{kind} archive (not read)")


def enter_container(kind: str, depth: int, budget: Budget) -> None:
    if depth >= budget.limits.max_zip_depth:
        raise Unreadable(LIMIT, f"{kind} nested deeper than {budget.limits.max_zip_depth} levels")


def extract_zip(path: str, data: bytes, budget: Budget, depth: int) -> list[Part]:
    """Every member of a zip, each read within the limits and dispatched by its own bytes."""
    zf = open_zip(data, "zip")
    parts: list[Part] = []
    limits = budget.limits
    for info in zf.infolist():
        if info.is_dir():
            continue
        member_path = f"{path}/{member_name(info)}"
        budget.members += 1
        if budget.members > limits.max_zip_members:
            parts.append(Part(path=path, kind="zip", unscannable=LIMIT,
                              detail=f"more than {limits.max_zip_members} zip members"))
            break
        if budget.exhausted:
            parts.append(Part(path=member_path, kind="zip", unscannable=LIMIT,
                              detail=f"over the extracted-bytes limit of {limits.max_total_bytes} bytes"))
            break
        try:
            budget.step(0)
            member = read_member(zf, info, budget)
        except Unreadable as exc:
            parts.append(Part(path=member_path, kind="zip", unscannable=exc.reason, detail=exc.detail))
            if exc.reason == LIMIT and (budget.exhausted or "time budget" in exc.detail):
                break
            continue
        parts.extend(extract_blob(member_path, member, budget, depth + 1))
    return parts or [Part(path=path, kind="zip")]


def _embeddings(path: str, zf: zipfile.ZipFile, budget: Budget, depth: int) -> list[Part]:
    """Files embedded in an Office document (an xlsx pasted into a docx, OLE packages)."""
    parts: list[Part] = []
    for info in zf.infolist():
        if "/embeddings/" not in info.filename or info.is_dir():
            continue
        member_path = f"{path}/{info.filename.rsplit('/', 1)[-1]}"
        try:
            data = read_member(zf, info, budget)
        except Unreadable as exc:
            parts.append(Part(path=member_path, unscannable=exc.reason, detail=exc.detail))
            continue
        parts.extend(extract_blob(member_path, data, budget, depth + 1))
    return parts
