"""`audit verify` catches edits, a chain recomputed without the key, removals, a cut tail,
reordering, forged decisions and another key; `audit export` answers who sent / approved.

The store signs its appends with the gateway's Ed25519 key and the gateway witnesses the chain head
(tests.test_approval_support.ControlThread serves the control socket the CLI talks to)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate import audit
from dlpgate.approvals import decide
from dlpgate.auditkey import AuditKey
from dlpgate.store import GENESIS, Store, entry_hash
from tests.test_approval_support import (
    ControlThread,
    assert_no_identifier,
    config_toml,
    load_config,
    my_login,
    people_with_me,
    put_held,
    run_cli,
    signed_store,
)


@pytest.fixture
def env(tmp_path: Path):  # noqa: ANN201
    cfg_path = config_toml(tmp_path, people=people_with_me("chief@example.jp"),
                           tail=f'[control]\nadmins = ["{my_login()}"]\n')
    cfg = load_config(cfg_path)
    st = signed_store(cfg)
    a = put_held(st, cfg, seed=11)
    b = put_held(st, cfg, sender="kacho@example.jp", seed=12)
    decide(st, cfg, "gw.test", a.id, "kacho@example.jp", "release", "confirmed with the recipient")
    decide(st, cfg, "gw.test", b.id, "bucho@example.jp", "reject", "use the secure transfer service")
    st.close()
    gw = ControlThread(cfg)  # witnesses the head at start, as the gateway does
    yield {"cfg": str(cfg_path), "config": cfg, "db": tmp_path / "store" / "dlpgate.db", "a": a, "b": b,
           "numbers": a.numbers + b.numbers, "gw": gw, "tmp": tmp_path}
    gw.close()


def _sql(db: Path, q: str, *args: object) -> None:
    c = sqlite3.connect(db)
    try:
        c.execute(q, args)
        c.commit()
    finally:
        c.close()


def _verify(env) -> tuple[int, str]:  # noqa: ANN001
    code, out, err = run_cli(["audit", "verify", "--config", env["cfg"]])
    assert err == ""
    return code, out


def test_intact_chain_verifies(env) -> None:  # noqa: ANN001
    code, out = _verify(env)
    key = env["gw"].key
    assert code == 0 and "chain intact" in out and f"signed by key {key.fingerprint}" in out
    assert "witnessed heads" in out


def test_edited_entry_is_named(env) -> None:  # noqa: ANN001
    # someone rewrites who approved the release
    _sql(env["db"], "UPDATE audit SET actor='bucho@example.jp' WHERE event='released'")
    code, out = _verify(env)
    seq = _seq(env["db"], "released")
    assert code == 1 and f"entry {seq}: content does not match its hash (edited)" in out


def test_edited_detail_is_named(env) -> None:  # noqa: ANN001
    _sql(env["db"], "UPDATE audit SET detail=replace(detail, 'secure transfer', 'usual') WHERE event='rejected'")
    code, out = _verify(env)
    assert code == 1 and f"entry {_seq(env['db'], 'rejected')}:" in out


def test_removed_entry_is_named(env) -> None:  # noqa: ANN001
    seq = _seq(env["db"], "rejected")
    _sql(env["db"], "DELETE FROM audit WHERE seq=?", seq)
    code, out = _verify(env)
    assert code == 1 and f"entry {seq} is missing" in out


def test_recomputed_unkeyed_chain_is_caught(env) -> None:  # noqa: ANN001
    # whoever can write the database changes who released it and recomputes every hash after it
    seq = _seq(env["db"], "released")
    c = sqlite3.connect(env["db"])
    c.row_factory = sqlite3.Row
    try:
        c.execute("UPDATE audit SET actor='bucho@example.jp' WHERE seq=?", (seq,))
        prev = c.execute("SELECT hash FROM audit WHERE seq=?", (seq - 1,)).fetchone()[0] if seq > 1 else GENESIS
        for r in c.execute("SELECT * FROM audit WHERE seq>=? ORDER BY seq", (seq,)).fetchall():
            h = entry_hash(prev, r["seq"], r["ts"], r["msg_id"], r["event"], r["actor"], r["os_user"], r["detail"])
            c.execute("UPDATE audit SET prev_hash=?, hash=? WHERE seq=?", (prev, h, r["seq"]))
            prev = h
        c.commit()
    finally:
        c.close()
    code, out = _verify(env)
    assert code == 1 and f"entry {seq}: signature does not verify" in out
    # and stripping the signatures too leaves entries the key never signed, or a witnessed head that differs
    _sql(env["db"], "UPDATE audit SET sig='' WHERE seq>=?", seq)
    code, out = _verify(env)
    assert code == 1 and ("differs from the head witnessed" in out or f"entry {seq}: not signed" in out)


def test_removed_tail_is_a_missing_witnessed_head(env) -> None:  # noqa: ANN001
    c = sqlite3.connect(env["db"])
    n = c.execute("SELECT max(seq) FROM audit").fetchone()[0]
    c.close()
    _sql(env["db"], "DELETE FROM audit WHERE seq>=?", n - 1)
    code, out = _verify(env)
    assert code == 1 and f"witnessed head seq {n} " in out and "is missing" in out


def test_forged_decision_row_is_caught(env) -> None:  # noqa: ANN001
    # the approvals table alone proves nothing: a row the signed chain lacks is named
    _sql(env["db"], "INSERT INTO approvals(msg_id, approver, decision, reason, os_user, ts) VALUES (?,?,?,?,?,?)",
         env["b"].id, "bucho@example.jp", "release", "", "bucho-login", 1.0)
    code, out = _verify(env)
    assert code == 1 and "decision by bucho@example.jp on message" in out and "(forged)" in out


def test_copied_database_with_the_wrong_key_fails_offline(env, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = env["config"]
    code, out, err = run_cli(["audit", "key", "--config", env["cfg"]])  # what an auditor is handed
    assert code == 0 and out.startswith("-----BEGIN PUBLIC KEY-----") and env["gw"].key.fingerprint in out
    pub = tmp_path / "auditor.pub"
    pub.write_text(out.split("# fingerprint")[0], encoding="ascii")
    copy = tmp_path / "copy"
    shutil.copytree(env["db"].parent, copy, ignore=shutil.ignore_patterns("*.sock"))
    code, out, err = run_cli(["audit", "verify", "--public-key", str(pub), "--store", str(copy),
                              "--witness", str(cfg.audit_witness_path), "--config", env["cfg"]])
    assert (code, err) == (0, "") and "chain intact" in out
    other, _ = AuditKey.load_or_create(tmp_path / "other.key")
    code, out, err = run_cli(["audit", "verify", "--public-key", str(tmp_path / "other.key.pub"), "--store",
                              str(copy), "--config", env["cfg"]])
    assert code == 1 and f"not {other.fingerprint}" in out and "entry " in out


def test_old_store_is_sealed_and_keyless_appends_are_caught(tmp_path: Path) -> None:
    cfg = load_config(config_toml(tmp_path))
    old = Store(cfg.store_path)  # a store from before signing
    a = put_held(old, cfg, seed=31)
    n_old = old.audit_head()[0]
    old.close()
    key, _ = AuditKey.load_or_create(cfg.audit_key_path)
    st = Store(cfg.store_path, signer=key.sign)
    try:
        assert audit.seal_legacy(st) == n_old
        assert audit.seal_legacy(st) == 0  # once
        w = audit.Witness(key, cfg.audit_witness_path)
        w.write(st, force=True)
        rep = audit.verify(st, key, cfg.audit_witness_path)
        assert rep.ok, rep.message
        sealed = st.audit_entries()[-1]
        assert sealed.event == "sealed" and sealed.detail["entries"] == n_old and sealed.sig
        # the sealed entries are covered: editing one of them fails
        _sql(cfg.store_path / "dlpgate.db", "UPDATE audit SET actor='x' WHERE seq=1")
        assert not audit.verify(st, key, cfg.audit_witness_path).ok
        _sql(cfg.store_path / "dlpgate.db", "UPDATE audit SET actor='dlpgate' WHERE seq=1")
        assert audit.verify(st, key, cfg.audit_witness_path).ok
    finally:
        st.close()
    keyless = Store(cfg.store_path)  # someone appends with the database alone
    put_held(keyless, cfg, seed=32, with_notices=False)
    try:
        rep = audit.verify(keyless, key, cfg.audit_witness_path)
        assert not rep.ok and f"entry {n_old + 2}: not signed" in rep.message
    finally:
        keyless.close()
    assert a.id


def test_refusals_are_audited_masked(env) -> None:  # noqa: ANN001
    n = env["numbers"][0]
    with pytest.raises(Exception, match="not one of your addresses"):
        env["gw"].as_person("sato-login", "quarantine.decide", id=env["a"].id, decision="reject",
                            approver=f"{n}@example.jp", reason="x")
    code, out, _ = run_cli(["audit", "export", "--json", "--id", env["a"].id, "--config", env["cfg"]])
    refused = [json.loads(x) for x in out.splitlines() if json.loads(x)["event"] == "refused"]
    assert len(refused) == 1 and refused[0]["actor"] == "sato-login"
    assert_no_identifier(out, env["numbers"])
    code, out = _verify(env)
    assert code == 0, out


def test_removed_tail_entry_renumbered_is_caught(env) -> None:  # noqa: ANN001
    # delete an entry and renumber the rest to hide the gap: the next entry no longer follows
    seq = _seq(env["db"], "released")
    _sql(env["db"], "DELETE FROM audit WHERE seq=?", seq)
    _sql(env["db"], "UPDATE audit SET seq=seq-1 WHERE seq>?", seq)
    code, out = _verify(env)
    assert code == 1 and f"entry {seq}:" in out


def test_reordered_entries_are_caught(env) -> None:  # noqa: ANN001
    c = sqlite3.connect(env["db"])
    try:
        n = c.execute("SELECT max(seq) FROM audit").fetchone()[0]
        c.execute("UPDATE audit SET seq=-1 WHERE seq=?", (n - 1,))
        c.execute("UPDATE audit SET seq=? WHERE seq=?", (n - 1, n))
        c.execute("UPDATE audit SET seq=? WHERE seq=-1", (n,))
        c.commit()
    finally:
        c.close()
    code, out = _verify(env)
    assert code == 1 and f"entry {n - 1}:" in out


def _seq(db: Path, event: str) -> int:
    c = sqlite3.connect(db)
    try:
        return int(c.execute("SELECT min(seq) FROM audit WHERE event=?", (event,)).fetchone()[0])
    finally:
        c.close()


def test_export_who_sent_what_who_approved(env) -> None:  # noqa: ANN001
    code, out, err = run_cli(["audit", "export", "--json", "--since", "1d", "--config", env["cfg"]])
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert all("id" in r and "seq" in r for r in rows)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    a_rows = [r for r in rows if r["id"] == env["a"].id]
    assert [r["event"] for r in a_rows] == ["accepted", "verdict", "held", "released"]
    assert a_rows[0]["detail"]["sender"] == "tanaka@soumu.example.jp"
    assert a_rows[0]["subject"] == "名簿の送付"
    assert a_rows[1]["detail"]["rules"] == ["my_number"]
    rel = a_rows[-1]
    assert rel["actor"] == "kacho@example.jp" and rel["os_user"] == "kacho-login"
    assert rel["detail"]["reason"].startswith("confirmed") and rel["detail"]["login"] == "kacho-login"
    rej = next(r for r in rows if r["id"] == env["b"].id and r["event"] == "rejected")
    assert rej["actor"] == "bucho@example.jp"
    # the notices are in the log too, as their own messages
    assert any(r["event"] == "accepted" and r["detail"].get("notice") == "released" for r in rows)
    assert_no_identifier(out, env["numbers"])

    code, out, _ = run_cli(["audit", "export", "--config", env["cfg"]])
    assert code == 0 and "by kacho@example.jp (os user" in out and "hold: my_number, 3 records" in out
    assert_no_identifier(out, env["numbers"])

    code, out, _ = run_cli(["audit", "export", "--json", "--id", env["b"].id, "--config", env["cfg"]])
    assert {json.loads(x)["id"] for x in out.splitlines()} == {env["b"].id}
    code, out, _ = run_cli(["audit", "export", "--until", "2001-01-01T00:00", "--config", env["cfg"]])
    assert code == 0 and out.strip() == "no audit entries in that range"


def test_masking_spares_hashes_and_ids_only() -> None:
    from dlpgate.audit import masked

    h = "12345678" * 8
    d = masked({"sha256": h, "id": "0190000000012345", "time": "2026-04-01T09:00:00+0900",
                "reason": "sent 621498320257 by mistake", "recipients": ["1234567890123@example.com"],
                "nested": {"response": "550 user 621498320257 unknown", "hash": h}})
    assert d["sha256"] == h and d["nested"]["hash"] == h and d["id"] == "0190000000012345"
    assert d["time"] == "2026-04-01T09:00:00+0900"
    assert d["reason"] == "sent 6214******** by mistake"
    assert d["recipients"] == ["1234*********@example.com"]
    assert d["nested"]["response"] == "550 user 6214******** unknown"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES, st.integers(1, 10**9), st.floats(0, 2e9), st.text(max_size=12))
def test_stored_json_and_chain_hashes_are_json_dumps_byte_for_byte(value, seq, ts, text) -> None:  # noqa: ANN001
    """The store encodes with encoders built once; a chain written before that must still verify."""
    import hashlib

    from dlpgate.store.model import _dumps, _entry_hash

    assert _dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    old = hashlib.sha256(json.dumps([seq, repr(ts), text, "accepted", "dlpgate", "u", _dumps(value), "0" * 64],
                                    ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()
    assert _entry_hash("0" * 64, seq, ts, text, "accepted", "dlpgate", "u", _dumps(value)) == old


async def test_gateway_seals_a_store_from_before_signing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from dlpgate.control import Caller
    from tests.conftest import make_config, running

    cfg_file = load_config(config_toml(tmp_path))
    old = Store(cfg_file.store_path)
    put_held(old, cfg_file, seed=61)
    n_old = old.audit_head()[0]
    old.close()
    _sql(cfg_file.store_path / "dlpgate.db", "ALTER TABLE audit DROP COLUMN sig")  # the schema before signing
    cfg = make_config(tmp_path, 9, approvers=cfg_file.approvers, people=cfg_file.people)
    with caplog.at_level("INFO"):
        async with running(cfg) as gw:
            res = await gw.authority.call(Caller("root-ish", 0, "socket"), "audit.verify", {})
            assert res["ok"], res
            head = json.loads(cfg.audit_witness_path.read_text(encoding="ascii").splitlines()[0])
            assert head["seq"] == n_old + 1  # the seal, witnessed before anything else appends
            seal = (await gw.store.run(lambda s: s.audit_chain(n_old, 1)))[0]
            assert seal.event == "sealed" and seal.detail["entries"] == n_old and seal.sig
    assert any(f"sealed {n_old} audit entries written before signing" in r.getMessage() for r in caplog.records)
