"""Text for a terminal: control characters and bidi overrides made visible, never obeyed.

Subjects, file names, addresses and reasons come from senders. Printed raw, `ESC [2K` erases a
line, `ESC [8m` hides what follows, a bare CR rewrites the line from its start and U+202E turns
the rest of it around: an approver could be shown a different findings table from the real one.
Every human output of the CLI goes through `for_terminal`, which writes such characters as
`\\uXXXX` (the same spelling as a JSON escape, so a JSON line stays valid and means the same).
"""

from __future__ import annotations

import builtins
import re
from typing import Any

# C0 except TAB and LF, DEL, C1; bidi embeddings, overrides, isolates and marks; line and
# paragraph separators (a terminal or pager may break the line there).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def for_terminal(text: str) -> str:
    """`text` with every control, bidi or line-separator character written as `\\uXXXX`."""
    return _UNSAFE.sub(_escape, text)


def safe_print(*values: Any, sep: str | None = " ", end: str | None = "\n", **kw: Any) -> None:
    """`print` whose text goes through `for_terminal` (the module-level print of the CLI)."""
    text = (" " if sep is None else sep).join(str(v) for v in values)
    builtins.print(for_terminal(text), end=end, **kw)
