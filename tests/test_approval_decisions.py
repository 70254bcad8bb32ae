"""Decisions, notices, expiry and reminders on a real store with a clock the test moves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dlpgate.approvals import Notices, decide
from dlpgate.config import QuarantineConfig
from dlpgate.errors import InputError, NotFound, PermissionDenied, StateError
from dlpgate.masking import mask_number
from dlpgate.store import AsyncStore, Store
from tests.test_approval_support import assert_no_identifier, load, notices_in, put_held


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock):  # noqa: ANN201
    st = Store(tmp_path / "store", clock=clock)
    yield st
    st.close()


def _state(store: Store, mid: str) -> str:
    return str(store.get(mid)["state"])


def test_held_notices_go_to_sender_and_approvers_without_content(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path, language="en")
    h = put_held(store, cfg)
    ns = notices_in(store)
    # the deputy (代理承認者) is asked too, from the start: not only by the first reminder
    assert [n["to"] for n in ns] == [["tanaka@soumu.example.jp"],
                                     ["kacho@example.jp", "bucho@example.jp", "dairi@example.jp"]]
    sender_notice, approver_notice = ns
    assert h.id in sender_notice["text"] and "kacho@example.jp" in sender_notice["text"]
    assert "dairi@example.jp" in sender_notice["text"]  # the deputy is named as someone who can approve
    assert "my_number" in sender_notice["text"] and "meibo.csv" in sender_notice["text"]
    assert f"quarantine release {h.id}" in approver_notice["text"]
    assert sender_notice["from"] == "postmaster@gw.test"
    for n in ns:
        assert_no_identifier(n["raw"], h.numbers)
        assert mask_number(h.numbers[0]) not in n["text"]  # not even the masked sample: names and counts
        assert b"meibo.csv" not in n["raw"].split(b"\r\n\r\n", 1)[0]  # no attachment carried along
        assert "Content-Disposition" not in n["raw"].decode()
    # notices are ordinary queued mail from the null sender, due at once, never scanned
    rows = store.list(kind="notice")
    assert {r["sender"] for r in rows} == {""} and {r["state"] for r in rows} == {"delayed"}


def test_japanese_templates(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path, language="ja")
    h = put_held(store, cfg)
    ns = notices_in(store)
    assert "送信を保留しました" in ns[0]["subject"] and "承認者" in ns[0]["text"]
    assert "承認待ち" in ns[1]["subject"] and "個人レコード数: 3" in ns[1]["text"]
    decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "reject", "外部送信は不可")
    last = notices_in(store)[-1]
    assert "却下されました" in last["subject"] and "外部送信は不可" in last["text"]


def test_no_route_tells_the_sender_nobody_can_approve(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path)
    put_held(store, cfg, sender="sato@zeimu.example.jp")
    ns = notices_in(store)
    assert len(ns) == 1 and ns[0]["to"] == ["sato@zeimu.example.jp"]
    assert "Nobody is configured to approve" in ns[0]["text"]


def test_unreachable_approval_count_is_announced(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path)
    put_held(store, cfg, sender="kacho@example.jp", required=2)  # only bucho may approve kacho's mail
    ns = notices_in(store)
    assert [n["to"] for n in ns] == [["kacho@example.jp"], ["bucho@example.jp"]]
    assert all("only 1 approver(s) may act" in str(n["text"]) for n in ns)


def test_notify_off_queues_nothing(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path)
    cfg = replace(cfg, quarantine=replace(cfg.quarantine, notify=False))
    h = put_held(store, cfg)
    decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "release")
    assert notices_in(store) == []


def test_refusals(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path)
    h = put_held(store, cfg)
    with pytest.raises(NotFound):
        decide(store, cfg, "gw.test", "0000000000000000000", "kacho@example.jp", "release")
    with pytest.raises(PermissionDenied, match="not an approver"):
        decide(store, cfg, "gw.test", h.id, "someone@example.jp", "release")
    with pytest.raises(PermissionDenied, match="self-approval"):
        decide(store, cfg, "gw.test", h.id, "tanaka@soumu.example.jp", "release")
    with pytest.raises(InputError, match="reason is required"):
        decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "reject", "  ")
    with pytest.raises(InputError):
        decide(store, cfg, "gw.test", h.id, "kacho", "release")
    assert _state(store, h.id) == "held"
    assert store.get(h.id)["approvals"] == []
    res = decide(store, cfg, "gw.test", h.id, "KACHO@example.jp", "release", "ok")
    assert (res.state, res.approvals, res.required) == ("released", 1, 1)
    with pytest.raises(StateError, match="already decided"):
        decide(store, cfg, "gw.test", h.id, "bucho@example.jp", "reject", "too late")
    # a release is deliverable at once: due now, no second delay
    d = store.get(h.id)
    assert d["due_at"] == store.clock()
    assert [c.id for c in store.claim_due(10) if c.kind == "mail"] == [h.id]


def test_two_approvers(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path)
    h = put_held(store, cfg, n=5, required=2)
    first = decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "release", "checked")
    assert (first.state, first.approvals, first.required) == ("held", 1, 2)
    assert [c.id for c in store.claim_due(10) if c.kind == "mail"] == []
    # the others are asked for the second approval; the first approver is not asked again
    second_req = notices_in(store)[-1]
    assert second_req["to"] == ["bucho@example.jp", "dairi@example.jp"]
    assert "1 more approval" in second_req["text"]
    with pytest.raises(PermissionDenied, match="already approved"):
        decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "release")
    with pytest.raises(PermissionDenied):
        decide(store, cfg, "gw.test", h.id, "tanaka@soumu.example.jp", "release")
    second = decide(store, cfg, "gw.test", h.id, "dairi@example.jp", "release", "deputy agrees")
    assert (second.state, second.approvals) == ("released", 2)
    released = notices_in(store)[-1]
    assert released["to"] == ["tanaka@soumu.example.jp"] and "dairi@example.jp" in released["text"]
    events = [e.event for e in store.audit_entries(msg_id=h.id)]
    assert events == ["accepted", "verdict", "held", "approved", "released"]


def test_two_approvals_are_two_people_not_two_addresses(tmp_path: Path, store: Store) -> None:
    # one person holding both approver addresses is still one person
    cfg = load(tmp_path, people={"boss": ["kacho@example.jp", "bucho@example.jp"], "dairi-login": "dairi@example.jp"})
    h = put_held(store, cfg, n=5, required=2)
    first = decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "release", "checked", login="boss")
    assert (first.state, first.approvals) == ("held", 1)
    with pytest.raises(PermissionDenied, match="boss has already approved it"):
        decide(store, cfg, "gw.test", h.id, "bucho@example.jp", "release", "me again", login="boss")
    assert _state(store, h.id) == "held"
    # an address acts only through its own login; an unbound address acts for nobody
    with pytest.raises(PermissionDenied, match="not one of your addresses"):
        decide(store, cfg, "gw.test", h.id, "dairi@example.jp", "release", login="boss")
    cfg2 = load(tmp_path, people={"boss": "kacho@example.jp"})
    with pytest.raises(PermissionDenied, match="bound to no login"):
        decide(store, cfg2, "gw.test", h.id, "bucho@example.jp", "release", login="bucho-login")
    second = decide(store, cfg, "gw.test", h.id, "dairi@example.jp", "release", "deputy agrees", login="dairi-login")
    assert (second.state, second.approvals) == ("released", 2)
    assert [a["login"] for a in store.get(h.id)["approvals"]] == ["boss", "dairi-login"]


def test_reject_notifies_sender_and_never_delivers(tmp_path: Path, store: Store) -> None:
    cfg = load(tmp_path)
    h = put_held(store, cfg)
    res = decide(store, cfg, "gw.test", h.id, "bucho@example.jp", "reject", "number 621498320257 not allowed")
    assert res.state == "rejected"
    n = notices_in(store)[-1]
    assert n["to"] == ["tanaka@soumu.example.jp"] and "rejected by bucho@example.jp" in n["text"]
    # the free-text reason is masked before it is stored or sent
    assert "621498320257" not in n["text"] and "6214********" in n["text"]
    assert store.get(h.id)["approvals"][0]["reason"] == "number 6214******** not allowed"
    assert [c.kind for c in store.claim_due(10)] == ["notice"] * 3


async def test_expiry_reject_with_moving_clock(tmp_path: Path, clock: Clock) -> None:
    cfg = load(tmp_path)
    ast = AsyncStore(tmp_path / "store", clock=clock)
    try:
        assert ast.store is not None
        h = await ast.run(lambda s: put_held(s, cfg, expires_in=cfg.quarantine.expire_after))
        notices = Notices(cfg, "gw.test")
        clock.t += 7 * 86400 - 60
        expired, _ = await notices.housekeep(ast, None)
        assert expired == []
        clock.t += 61
        expired, _ = await notices.housekeep(ast, None)
        assert expired == [h.id]
        assert (await ast.run(lambda s: s.get(h.id)))["state"] == "expired"
        ns = await ast.run(notices_in)
        assert ns[-1]["to"] == ["tanaka@soumu.example.jp"] and "expired" in ns[-1]["subject"].lower()
        with pytest.raises(StateError):
            await ast.run(lambda s: decide(s, cfg, "gw.test", h.id, "kacho@example.jp", "release"))
        assert (await notices.housekeep(ast, None))[0] == []  # once only
    finally:
        ast.close()


def test_expiry_release_action(tmp_path: Path, store: Store, clock: Clock) -> None:
    cfg = load(tmp_path, extra='expire_action = "release"\nexpire_after = 3600')
    assert cfg.quarantine == QuarantineConfig(expire_after=3600, expire_action="release", language="en")
    h = put_held(store, cfg, expires_in=cfg.quarantine.expire_after)
    clock.t += 3601
    assert Notices(cfg, "gw.test").expire(store) == [h.id]
    assert _state(store, h.id) == "released"
    assert "sent after expiry" in notices_in(store)[-1]["subject"]
    assert h.id in [c.id for c in store.claim_due(10)]


def test_reminders_at_interval_to_approvers_and_deputies(tmp_path: Path, store: Store, clock: Clock) -> None:
    cfg = load(tmp_path, extra="remind_every = 86400")
    h = put_held(store, cfg, required=2)
    notices = Notices(cfg, "gw.test")
    clock.t += 86399
    assert notices.remind(store) == []
    clock.t += 2
    assert notices.remind(store) == [h.id]
    r = notices_in(store)[-1]
    assert r["to"] == ["kacho@example.jp", "bucho@example.jp", "dairi@example.jp"]
    assert "Reminder" in r["subject"] and "held for 1 days" in r["text"]
    assert notices.remind(store) == []  # not again until the next interval
    decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "release")
    clock.t += 86401
    assert notices.remind(store) == [h.id]
    assert notices_in(store)[-1]["to"] == ["bucho@example.jp", "dairi@example.jp"]


def test_reminders_off(tmp_path: Path, store: Store, clock: Clock) -> None:
    cfg = load(tmp_path, extra="remind_every = 0")
    put_held(store, cfg)
    clock.t += 30 * 86400 - 1
    assert Notices(cfg, "gw.test").remind(store) == []


def test_retention_removes_spool_keeps_audit(tmp_path: Path, store: Store, clock: Clock) -> None:
    cfg = load(tmp_path)
    h = put_held(store, cfg)
    decide(store, cfg, "gw.test", h.id, "kacho@example.jp", "reject", "no")
    spool = store.spool_path(store.get(h.id)["spool"])
    assert spool.exists()
    clock.t += 29 * 86400
    assert store.purge(30 * 86400, 366 * 86400) == 0
    clock.t += 2 * 86400
    assert store.purge(30 * 86400, 366 * 86400) >= 1
    assert not spool.exists()
    with pytest.raises(StateError, match="retention"):
        store.read_spool(h.id)
    assert [e.event for e in store.audit_entries(msg_id=h.id)][-1] == "purged"
    assert store.verify_audit()[0]
    assert len(store.sendlog(sender="tanaka@soumu.example.jp")) == 1  # the send log outlives the spool
    clock.t += 366 * 86400
    store.purge(30 * 86400, 366 * 86400)
    assert store.sendlog(sender="tanaka@soumu.example.jp") == []
