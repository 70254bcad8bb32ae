"""Notices link to the console when `[web] base_url` is set; the links carry no token."""

from __future__ import annotations

from pathlib import Path

from dlpgate.store import Store

from .test_approval_support import load, notices_in, put_held


def test_held_and_approval_notices_link_to_the_console(tmp_path: Path) -> None:
    cfg = load(tmp_path, extra='[web]\nbase_url = "https://dlpgate.example.jp/"\n')
    st = Store(cfg.store_path)
    try:
        held = put_held(st, cfg)
        ns = notices_in(st)
    finally:
        st.close()
    to_sender = [n for n in ns if n["to"] == ["tanaka@soumu.example.jp"]]
    to_approvers = [n for n in ns if "kacho@example.jp" in n["to"]]
    assert to_sender and to_approvers
    assert "https://dlpgate.example.jp/mine" in str(to_sender[0]["text"])
    assert f"https://dlpgate.example.jp/m/{held.id}" in str(to_approvers[0]["text"])
    for n in ns:  # a link is a page address, nothing that could act by itself
        for line in str(n["text"]).splitlines():
            if "https://" in line:
                assert "?" not in line and "token" not in line.lower()


def test_no_links_without_base_url(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    st = Store(cfg.store_path)
    try:
        put_held(st, cfg)
        ns = notices_in(st)
    finally:
        st.close()
    assert ns and all("http" not in str(n["text"]) for n in ns)
