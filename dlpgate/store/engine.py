"""Which store engine a configuration names: the embedded SQLite store in `[store] path`, or the
PostgreSQL engine shared by several gateways when `[store] url` is set. The one place that
chooses, so serve, the deliverer and the CLI always open the same store."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .interface import StoreEngine
from .model import Signer
from .sqlite import AsyncStore, Store


def uses_pg(config: Config) -> bool:
    url = config.store.url
    if not url:
        return False
    from .postgres import is_pg_url

    if not is_pg_url(url):
        raise ConfigError("store.url: expected postgresql://... (or nothing, for the embedded store)")
    return True


def open_store(config: Config, *, migrate_at_start: bool = True, signer: Signer | None = None) -> StoreEngine:
    """A synchronous store (recovery, tools): `Store` or `PgStore`, same interface (`StoreEngine`)."""
    if uses_pg(config):
        from .postgres import PgStore

        return PgStore(config.store.url, config.store_path, node=config.store.node,
                       lease_seconds=config.store.lease_seconds, migrate_at_start=migrate_at_start, signer=signer)
    return Store(config.store_path, signer=signer)


def open_async_store(config: Config, *, lead: bool = False, signer: Signer | None = None) -> AsyncStore:
    """The writer-thread store of `serve` and of the deliverer. `lead`: this process competes for
    the cluster's housekeeping leadership (the gateway does, its deliverer does not)."""
    if uses_pg(config):
        from .postgres import AsyncPgStore

        return AsyncPgStore(config.store.url, config.store_path, node=config.store.node,
                            lease_seconds=config.store.lease_seconds, lead=lead, signer=signer)
    return AsyncStore(config.store_path, signer=signer)
