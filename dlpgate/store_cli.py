"""`dlpgate store migrate` / `dlpgate store status`: the PostgreSQL store's schema versions.

Gateways apply online-safe migrations themselves at start; an operator runs `store migrate`
before starting a new version whose migrations are not (the start then refuses, naming it)."""

from __future__ import annotations

import argparse
from typing import Any

from .config import Config
from .errors import InputError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    st = sub.add_parser("store", parents=[common], help="the message store's database schema (PostgreSQL)")
    ssub = st.add_subparsers(dest="store_command", required=True, parser_class=type(st))
    p = ssub.add_parser("migrate", parents=[common], help="apply pending schema migrations")
    p.set_defaults(func=cmd_migrate)
    p = ssub.add_parser("status", parents=[common], help="schema version and nodes seen")
    p.set_defaults(func=cmd_status)


def _url(config: Config) -> str:
    from .store.engine import uses_pg

    if not uses_pg(config):
        raise InputError("the embedded store needs no migration: set [store] url = \"postgresql://...\" to use"
                         " the shared PostgreSQL store")
    return config.store.url


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from .store.postgres import migrate_url

    version, applied = migrate_url(_url(config))
    if applied:
        print(f"store schema migrated to version {version} (applied {', '.join(map(str, applied))})")
    else:
        print(f"store schema at version {version}: nothing to do")
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    import time

    from .errors import StoreError
    from .store.postgres import LATEST, _one_line, _psycopg, _safe_url, schema_version

    url = _url(config)
    psycopg = _psycopg()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as c:
            v = schema_version(c)
            nodes = c.execute("SELECT node, heartbeat FROM nodes ORDER BY node").fetchall() if v else []
    except psycopg.Error as e:
        raise StoreError(f"cannot read {_safe_url(url)}: {_one_line(e)}") from e
    print(f"schema version {v} (this dlpgate: {LATEST})" + ("" if v >= LATEST else ": run `dlpgate store migrate`"))
    now = time.time()
    for node, beat in nodes:
        print(f"node {node}: last heartbeat {now - beat:.0f} s ago")
    return 0
