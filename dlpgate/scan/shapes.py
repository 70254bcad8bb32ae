"""Shapes a 12-digit number has when it is plainly something other than a My Number.

About one random 12-digit number in ten passes the My Number check digit, so a passing number alone
is weak evidence. These shapes say what else a passing number is; the scanner asks for extra
evidence (a My Number keyword nearby or a My Number column) before it reports one of them.
"""

from __future__ import annotations

import datetime
import re
from operator import mul


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


_UPC_WEIGHTS = (3, 1) * 6  # odd positions (1st, 3rd ... 11th) thrice, even ones and the check digit once
_UPC_ZERO = 48 * sum(_UPC_WEIGHTS)


def is_upc_a(digits: str) -> bool:
    """Whether 12 digits end in a valid UPC-A (GTIN-12) check digit."""
    if len(digits) != 12:
        return False
    if digits.isascii() and digits.isdigit():  # (3 * odd + even + check) = 0 mod 10, in one weighted sum
        return (sum(map(mul, digits.encode(), _UPC_WEIGHTS)) - _UPC_ZERO) % 10 == 0
    odd = sum(ord(c) - 48 for c in digits[0:11:2])
    even = sum(ord(c) - 48 for c in digits[1:11:2])
    return (10 - (3 * odd + even) % 10) % 10 == ord(digits[11]) - 48


# Header fields that carry machine-made ids (a message id, a queue id, a signature), as they appear
# when a header block is pasted into a body, saved as a text file or returned in a bounce.
_TRACE_FIELD = re.compile(
    r"(?i)(?:message-id|resent-message-id|x-original-message-id|original-message-id|references|in-reply-to|"
    r"received|x-received|received-spf|return-path|dkim-signature|domainkey-signature|arc-[a-z-]+|"
    r"authentication-results|thread-index|thread-topic|list-id|content-id|x-ms-[a-z0-9-]+|x-google-[a-z0-9-]+|"
    r"x-gm-[a-z0-9-]+|x-mailer|x-originating-ip|x-[a-z0-9-]*-id|feedback-id)[ \t]*:")
_CONTINUATION_LINES = 30  # a folded Received or DKIM-Signature field is looked up this many lines back


_TRACE_FIRST = frozenset("mMrRiIdDaAtTlLcCxXfF \t")  # first letters of the fields above, and folding


def in_trace_header(text: str, pos: int) -> bool:
    """Whether `pos` lies in the value of a trace header field (first line or a folded continuation)."""
    ls = text.rfind("\n", 0, pos) + 1
    if text[ls] not in _TRACE_FIRST:
        return False
    for _ in range(_CONTINUATION_LINES):
        if ls >= len(text):
            return False
        first = text[ls]
        if first not in " \t":
            return _TRACE_FIELD.match(text, ls) is not None
        if ls == 0:
            return False
        ls = text.rfind("\n", 0, ls - 1) + 1
    return False
