"""Shapes a 12-digit number has when it is plainly something other than a My Number.

About one random 12-digit number in ten passes the My Number check digit, so a passing number alone
is weak evidence. These shapes say what else a passing number is; the scanner asks for extra
evidence (a My Number keyword nearby or a My Number column) before it reports one of them.
"""

from __future__ import annotations

import datetime


def is_placeholder(digits: str) -> bool:
    """`000000000000`, `999999999999`: a form's example or a filler, never a person's number."""
    return digits.count(digits[0]) == len(digits)


def is_datetime(digits: str) -> bool:
    """A valid `yyyymmddHHMM` between 1900 and 2099 (log and export timestamps)."""
    if len(digits) != 12 or digits[:2] not in ("19", "20"):
        return False
    hour, minute = int(digits[8:10]), int(digits[10:12])
    if hour > 23 or minute > 59:
        return False
    try:
        datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return False
    return True


def is_upc_a(digits: str) -> bool:
    """Whether 12 digits end in a valid UPC-A (GTIN-12) check digit."""
    if len(digits) != 12:
        return False
    odd = sum(ord(c) - 48 for c in digits[0:11:2])
    even = sum(ord(c) - 48 for c in digits[1:11:2])
    return (10 - (3 * odd + even) % 10) % 10 == ord(digits[11]) - 48
