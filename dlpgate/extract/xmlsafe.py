"""Expat parsers for XML taken from attachments, with every DTD refused.

OOXML parts never carry a document type declaration, so any `<!DOCTYPE` (and with it every entity
declaration: billion laughs, external entities) is refused outright and the file becomes
`unscannable` (corrupt). Input is fed in chunks so the time budget is checked while parsing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from typing import IO
from xml.parsers import expat

from .budget import Budget, Unreadable, corrupt

CHUNK = 256 * 1024


def _refuse_dtd(*_args: object) -> None:
    raise corrupt("XML with a document type declaration refused")


def new_parser() -> expat.XMLParserType:
    """A non-namespace expat parser (element names keep their prefix: match on the local name)."""
    p = expat.ParserCreate()
    p.buffer_text = True
    p.buffer_size = 65536
    p.StartDoctypeDeclHandler = _refuse_dtd
    p.EntityDeclHandler = _refuse_dtd
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return p


def parse_events(source: IO[bytes] | bytes | Iterable[bytes], budget: Budget, what: str,
                 start: Callable[[str, dict[str, str]], None], end: Callable[[str], None],
                 chars: Callable[[str], None]) -> None:
    """Stream `source` through a defused parser with these three handlers."""
    p = new_parser()
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    feed(p, source, budget, what)


def feed(parser: expat.XMLParserType, source: IO[bytes] | bytes | Iterable[bytes], budget: Budget,
         what: str) -> None:
    """Parse all of `source` in chunks, checking the clock between chunks (bytes are charged by the
    reader that decompresses them, see zipread)."""
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            mv = memoryview(source)
            for i in range(0, len(mv), CHUNK):
                budget.step(0)
                parser.Parse(mv[i:i + CHUNK].tobytes(), False)
        elif hasattr(source, "read"):
            reader = source  # type: ignore[assignment]
            while chunk := reader.read(CHUNK):  # type: ignore[union-attr]
                budget.step(0)
                parser.Parse(chunk, False)
        else:
            for chunk in source:
                budget.step(0)
                parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except Unreadable:
        raise
    except expat.ExpatError as exc:
        raise corrupt(f"malformed XML in {what} ({expat.ErrorString(exc.code)})") from None
    except (RecursionError, MemoryError):
        raise corrupt(f"XML in {what} too deeply nested or too large") from None


def local(name: str) -> str:
    """`x:c` -> `c`; OOXML writers use the default namespace or any prefix."""
    return name.rpartition(":")[2]


class LocalNames(dict[str, str]):
    """name -> local name, computed once per distinct element name (keeps handlers to one dict lookup)."""

    def __missing__(self, key: str) -> str:
        value = local(key)
        self[key] = value
        return value


def parse_small(data: bytes, budget: Budget, what: str) -> list[tuple[str, dict[str, str]]]:
    """All start tags of a small XML part (rels, workbook, content types) as (local name, attributes)."""
    out: list[tuple[str, dict[str, str]]] = []
    names = LocalNames()
    p = new_parser()

    def start(name: str, attrs: dict[str, str]) -> None:
        out.append((names[name], {local(k): v for k, v in attrs.items()}))

    p.StartElementHandler = start
    feed(p, data, budget, what)
    return out


def relationships(data: bytes | None, base: str, budget: Budget) -> dict[str, str]:
    """Relationship id -> member path (targets are relative to `base`, or absolute from the root)."""
    if data is None:
        return {}
    out: dict[str, str] = {}
    for tag, attrs in parse_small(data, budget, "relationships"):
        if tag == "Relationship" and attrs.get("TargetMode") != "External":
            target = attrs.get("Target", "")
            full = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"{base}/{target}")
            out[attrs.get("Id", "")] = full
    return out
