"""deploy/cluster stays true to the code: both gateways' configs load and name the shared
PostgreSQL store with distinct node names; the compose file wires db, migrate, two gateways and
Postfix, and every gateway's config is mounted."""

from __future__ import annotations

from pathlib import Path

import yaml

from dlpgate.config import load_config
from dlpgate.store.engine import uses_pg

KIT = Path(__file__).parent.parent / "deploy" / "cluster"


def test_node_configs_load_and_differ() -> None:
    cfgs = [load_config(str(KIT / f"node-{n}.toml")) for n in ("a", "b")]
    assert all(uses_pg(c) for c in cfgs)
    assert len({c.store.url for c in cfgs}) == 1
    assert len({c.store.node for c in cfgs}) == 2


def test_compose_services() -> None:
    doc = yaml.safe_load((KIT / "compose.yml").read_text())
    svc = doc["services"]
    assert {"db", "migrate", "gw-a", "gw-b", "postfix"} <= set(svc)
    assert svc["migrate"]["command"][:2] == ["store", "migrate"]
    for n in ("a", "b"):
        mounts = svc[f"gw-{n}"]["volumes"]
        assert any(m.startswith(f"./node-{n}.toml:") for m in mounts)
        assert (KIT / f"node-{n}.toml").is_file()
    url = load_config(str(KIT / "node-a.toml")).store.url
    env = svc["db"]["environment"]
    assert f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@db:5432/{env['POSTGRES_DB']}" in url
