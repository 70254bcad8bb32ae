"""Approver routing: globs on address or domain, deputies, several routes, no self-approval."""

from __future__ import annotations

import pytest

from dlpgate.approvals import Router, sender_matches
from dlpgate.config import ApproverRoute
from dlpgate.errors import PermissionDenied


@pytest.mark.parametrize(("pattern", "sender", "expected"), [
    ("*@soumu.example.jp", "tanaka@soumu.example.jp", True),
    ("*@soumu.example.jp", "Tanaka@SOUMU.example.jp", True),
    ("*@soumu.example.jp", "tanaka@zeimu.example.jp", False),
    ("*@soumu.example.jp", "tanaka@sub.soumu.example.jp", False),
    ("soumu.example.jp", "tanaka@soumu.example.jp", True),   # no "@": a glob on the domain
    ("soumu.example.jp", "soumu.example.jp@evil.example", False),
    ("*.example.jp", "a@soumu.example.jp", True),
    ("*.example.jp", "a@example.jp", False),
    ("tanaka@*", "tanaka@anything.example", True),
    ("*", "", False),  # the null sender matches nothing
])
def test_sender_matches(pattern: str, sender: str, expected: bool) -> None:
    assert sender_matches(pattern, sender) is expected


ROUTES = (
    ApproverRoute(senders=("*@soumu.example.jp",), approvers=("kacho@example.jp",), deputies=("dairi@example.jp",)),
    ApproverRoute(senders=("kacho@example.jp", "soumu.example.jp"), approvers=("bucho@example.jp",
                                                                              "kacho@example.jp")),
)


def test_routes_union_and_order() -> None:
    who = Router(ROUTES).for_sender("tanaka@soumu.example.jp")
    assert who.approvers == ("kacho@example.jp", "bucho@example.jp")
    assert who.deputies == ("dairi@example.jp",)
    assert "BUCHO@example.jp" in who
    assert "someone@example.jp" not in who


def test_sender_is_never_their_own_approver() -> None:
    who = Router(ROUTES).for_sender("kacho@example.jp")
    assert who.approvers == ("bucho@example.jp",)
    with pytest.raises(PermissionDenied, match="no self-approval"):
        Router(ROUTES).check("m1", "Kacho@Example.jp", "kacho@example.jp")
    Router(ROUTES).check("m1", "bucho@example.jp", "kacho@example.jp")


def test_deputy_may_act_wrong_approver_may_not() -> None:
    r = Router(ROUTES)
    r.check("m1", "dairi@example.jp", "tanaka@soumu.example.jp")
    with pytest.raises(PermissionDenied, match="not an approver for mail from sato@zeimu.example.jp"):
        r.check("m1", "dairi@example.jp", "sato@zeimu.example.jp")
    with pytest.raises(PermissionDenied):
        r.check("m1", "kacho@example.jp", "sato@zeimu.example.jp")


def test_unrouted_sender_has_nobody() -> None:
    who = Router(ROUTES).for_sender("sato@zeimu.example.jp")
    assert who.everyone == ()
