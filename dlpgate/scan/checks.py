"""Check digits, card brands and masking. Pure functions on ASCII digit strings."""

from __future__ import annotations

from operator import mul

_MY_NUMBER_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ASCII_ZERO_SUM = 48 * sum(_MY_NUMBER_WEIGHTS)  # the weighted sum of eleven b"0" bytes


def my_number_check_digit(first11: str) -> int:
    """Check digit of a My Number (個人番号) from its first 11 digits.

    Weights 6,5,4,3,2,7,6,5,4,3,2 from the left; r = sum mod 11; check = 0 if r <= 1 else 11 - r.
    """
    if len(first11) != 11 or not (first11.isascii() and first11.isdigit()):
        raise ValueError("expected 11 ASCII digits")
    r = (sum(map(mul, first11.encode(), _MY_NUMBER_WEIGHTS)) - _ASCII_ZERO_SUM) % 11
    return 0 if r <= 1 else 11 - r


_WEIGHTS_WITH_CHECK = (*_MY_NUMBER_WEIGHTS, 1)


def is_valid_my_number(digits: str) -> bool:
    """Whether 12 ASCII digits end in the right check digit, in one weighted sum.

    With S the weighted sum of the first 11 and c the check digit, S + c = 0 (mod 11) exactly
    when c = 11 - (S mod 11) or S = 0 (mod 11) and c = 0; the one other valid case,
    S = 1 (mod 11) and c = 0, leaves 1. (S + c = 1 otherwise means c = 12 - (S mod 11) or
    S = 0 and c = 1: both invalid.) The hypothesis tests compare it with the definition.
    """
    if len(digits) != 12 or not (digits.isascii() and digits.isdigit()):
        return False
    r = (sum(map(mul, digits.encode(), _WEIGHTS_WITH_CHECK)) - _ASCII_ZERO_SUM - 48) % 11
    return r == 0 or (r == 1 and digits[11] == "0")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# (prefix range low, high, number of prefix digits, allowed lengths)
_BRANDS: tuple[tuple[str, int, int, int, frozenset[int]], ...] = (
    ("visa", 4, 4, 1, frozenset({16, 19})),
    ("mastercard", 51, 55, 2, frozenset({16})),
    ("mastercard", 2221, 2720, 4, frozenset({16})),
    ("amex", 34, 34, 2, frozenset({15})),
    ("amex", 37, 37, 2, frozenset({15})),
    ("jcb", 3528, 3589, 4, frozenset({16, 17, 18, 19})),
    ("diners", 300, 305, 3, frozenset({14, 16})),
    ("diners", 36, 36, 2, frozenset({14, 16})),
    ("diners", 38, 39, 2, frozenset({14, 16})),
    ("discover", 6011, 6011, 4, frozenset({16, 19})),
    ("discover", 644, 649, 3, frozenset({16, 19})),
    ("discover", 65, 65, 2, frozenset({16, 19})),
    ("unionpay", 62, 62, 2, frozenset({16, 17, 18, 19})),
)


_CARD_LENGTHS = frozenset().union(*(lengths for *_, lengths in _BRANDS))
# The shortest card number (the digit trigger's contiguous alternative, scan/gate.py: 13 digits is
# the commonest long number of business text, a JAN or corporate number, and no card).
CARD_MIN_LENGTH = min(_CARD_LENGTHS)


def card_brand(digits: str) -> str | None:
    """The card brand whose prefix and length fit `digits`, or None."""
    n = len(digits)
    if n not in _CARD_LENGTHS:  # 13 digits (a JAN code): no brand, no prefix to read
        return None
    for brand, low, high, width, lengths in _BRANDS:
        if n in lengths and low <= int(digits[:width]) <= high:
            return brand
    return None


def is_card_number(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and card_brand(digits) is not None and luhn_valid(digits)


def mask(digits: str, keep: int = 4) -> str:
    """First `keep` digits then one `*` per remaining digit: `6214********`."""
    return digits[:keep] + "*" * max(0, len(digits) - keep)
