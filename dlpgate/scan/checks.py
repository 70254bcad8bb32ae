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


_DIGIT_VALUE = bytes(b - 48 if 48 <= b <= 57 else 0 for b in range(256))
_MOD_11 = bytes(b % 11 for b in range(256))
# Byte 16a + b, a and b the residues (mod 11) of the weighted sums of digits 1-6 and 7-11 -> the
# check digit those eleven digits need (255: no such pair of residues).
_CHECK_OF = bytes((0 if (a + b) % 11 <= 1 else 11 - (a + b) % 11) if a < 11 and b < 11 else 255
                  for a in range(16) for b in range(16))
# Multipliers that put each 12-byte block's weighted sum of digits 1-6 in its byte 5, and of digits
# 7-11 in its byte 10, when the blocks are read as one little-endian integer (see my_number_failures).
_FIRST_SIX = sum(w << 8 * (5 - j) for j, w in enumerate(_MY_NUMBER_WEIGHTS[:6]))
_NEXT_FIVE = sum(w << 8 * (10 - j) for j, w in enumerate(_MY_NUMBER_WEIGHTS) if j >= 6)


def my_number_failures(blob: bytes) -> bytes:
    """For `blob`, n blocks of 12 ASCII digits, n bytes: 0 where a block is a valid My Number
    (is_valid_my_number), non-zero where its check digit is wrong.

    All blocks at once, in a few C-level passes, instead of a Python step per number (issue 19:
    dense business mail holds ~9,000 12-digit runs per 10 MB, tracking and order numbers, nearly
    all failing): the digits (0-9 in one byte each) read as one integer and multiplied by the
    weights of digits 1-6 written backwards as base-256 digits put each block's weighted sum of its
    first six digits in the block's byte 5; no byte of the product exceeds 9 * (6+5+4+3+2+7) = 243,
    so nothing carries from one byte, or one block, into the next. The same with digits 7-11 (at
    most 9 * 20) lands in byte 10. Their residues mod 11, packed in one byte, give the check digit
    by one table, compared with each block's twelfth digit by one exclusive or.
    """
    n, rest = divmod(len(blob), 12)
    if rest or not (blob.isdigit() or not blob):
        raise ValueError("expected blocks of 12 ASCII digits")
    if not n:
        return b""
    x = int.from_bytes(blob.translate(_DIGIT_VALUE), "little")
    size = 12 * n + 8
    first = (x * _FIRST_SIX).to_bytes(size, "little")[5::12][:n].translate(_MOD_11)
    second = (x * _NEXT_FIVE).to_bytes(size, "little")[10::12][:n].translate(_MOD_11)
    packed = (int.from_bytes(first, "little") << 4 | int.from_bytes(second, "little")).to_bytes(n, "little")
    expected = int.from_bytes(packed.translate(_CHECK_OF), "little")
    return (expected ^ int.from_bytes(blob[11::12].translate(_DIGIT_VALUE), "little")).to_bytes(n, "little")


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
