"""Message ids survive masking: a supervisor must be able to name the message an error is about."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.masking import mask_text
from dlpgate.store.model import _letters, new_id


def test_an_id_has_no_digit_and_masking_leaves_it_whole() -> None:
    for _ in range(2000):
        mid = new_id()
        assert not any(c.isdigit() for c in mid) and len(mid) == 18
        line = f"message {mid} is delivered: only a delayed message can be recalled"
        assert mask_text(line) == line


def test_ids_sort_by_arrival() -> None:
    first = new_id()
    time.sleep(0.005)
    assert new_id() > first


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 20**10 - 2), st.integers(0, 20**10 - 1))
def test_the_time_part_keeps_the_order_of_the_clock(a: int, b: int) -> None:
    assert (_letters(a, 10) < _letters(b, 10)) == (a < b)
