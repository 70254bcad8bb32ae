"""`--since` / `--until` values: a date (YYYY-MM-DD, midnight UTC) or an ISO 8601 time."""

from __future__ import annotations

from datetime import UTC, datetime

from dlpgate.errors import InputError


def parse_when(value: str | None, option: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{option}: not a date (YYYY-MM-DD or ISO 8601): {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
