"""A tiny asyncio HTTP endpoint for Prometheus (`/metrics`) and health (`/healthz`).

Hand-rolled on asyncio streams so it lives on the gateway's own event loop (health reflects the
loop actually running) and needs no extra thread or framework.

`/healthz` answers a JSON object with each check: 200 while the gateway itself works ("ok", or
"degraded" when mail cannot leave: the upstream does not answer or deferred mail grows old), 503
when a part of the gateway is down ("unhealthy"). Degraded is 200 on purpose: restarting the
gateway does not bring an upstream back, and a liveness probe must not loop on it.
Before `/metrics` is rendered the gauges are refreshed from the store, so a scrape sees the
queue as it is now, not as the last housekeeping pass (30 s ago) saw it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import REGISTRY


class MetricsServer:
    def __init__(self, host: str, port: int, health: Callable[[], dict[str, Any]],
                 refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self.host, self.port, self.health, self.refresh = host, port, health, refresh
        self.server: asyncio.base_events.Server | None = None

    async def start(self, *, serving: bool = True) -> None:
        """Bind (OSError when the port is taken); with serving=False, accept only after `serve()`."""
        self.server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True,
                                                 start_serving=serving)
        self.port = self.server.sockets[0].getsockname()[1]

    async def serve(self) -> None:
        if self.server is not None:
            await self.server.start_serving()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            while True:  # drain headers
                h = await asyncio.wait_for(reader.readline(), timeout=10)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path in ("/metrics", "/healthz") and self.refresh is not None:
                try:
                    await asyncio.wait_for(self.refresh(), timeout=5)
                except Exception:  # noqa: BLE001 - a stale gauge beats no answer; the store check says why
                    pass
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
            elif path == "/healthz":
                report = self.health()
                status = "503 Service Unavailable" if report.get("status") == "unhealthy" else "200 OK"
                ctype = "application/json"
                body = (json.dumps(report, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
