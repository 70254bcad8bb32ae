"""The browser console: a client of the control API, served inside `dlpgate serve`'s event loop.

Why inside `serve` and not a separate `dlpgate web` process: the console must call the one
authority (`dlpgate.control.Authority`) and nothing else; in the same process that is a direct
`await authority.call(...)` with the same routes, identities and audit key, no second copy of the
config to drift, no socket hop to secure, one service account and one unit to run. Uvicorn's
protocol objects are plain asyncio protocols on the gateway's (uvloop) loop, like the SMTP
listener's; the page work is small (a few store reads in the store's own thread, a template render)
and scrypt runs on a two-thread pool, so the accept path is not starved.

`WebServer` binds the socket itself (a taken port is a clear ConfigError, not uvicorn's
`sys.exit`) and runs uvicorn without its signal handlers: SIGTERM/SIGHUP stay the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

from ..config import Config, parse_hostport
from ..errors import ConfigError

log = logging.getLogger("dlpgate.web")


def _bind(listen: str) -> socket.socket:
    host, port = parse_hostport(listen, "web.listen")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"web.listen: cannot resolve {host}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"web.listen: cannot listen on {listen}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


class WebServer:
    """The console's listener. Made early in start-up (binds the port, loads the certificate: a
    problem stops the gateway before anything runs), started once the authority exists, stopped
    before the store closes."""

    def __init__(self, config: Config) -> None:
        import uvicorn

        self.config = config
        self.console: Any = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        web = config.web
        if web.users_file:  # a missing or broken accounts file names itself now, not at the first sign-in
            from .accounts import AccountFile

            try:
                AccountFile(config.beside(web.users_file)).accounts()
            except ConfigError as e:
                raise ConfigError(f"{e} (create accounts with: dlpgate web-user add FILE LOGIN)") from None
        self._sock = _bind(web.listen)
        self._uvicorn = uvicorn.Config(
            _Deferred(self), lifespan="off", access_log=False, log_config=None, server_header=False,
            date_header=True, proxy_headers=False, http="h11", ws="none",
            ssl_certfile=config.beside(web.tls_cert) or None, ssl_keyfile=config.beside(web.tls_key) or None,
            timeout_keep_alive=30, limit_concurrency=200, h11_max_incomplete_event_size=65536)
        try:
            self._uvicorn.load()
        except (OSError, ValueError) as e:  # unreadable or mismatched certificate and key
            self._sock.close()
            raise ConfigError(f"web.tls_cert: cannot load the certificate and key: {e}") from None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = parse_hostport(self.config.web.listen, "web.listen")[0]
        scheme = "https" if self.config.web.tls_cert else "http"
        return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the new config's sign-in policy, links and language; the socket stays as it is."""
        self.config = config
        if self.console is not None:
            self.console.reconfigure(config)

    async def start(self, authority: Any) -> None:
        from .app import Console

        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # the gateway logs its own start line
        self.console = Console(self.config, authority)
        self._server = _QuietServer(self._uvicorn)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="web-console")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError("web.listen: the console did not start")
            await asyncio.sleep(0.01)
        log.info("web console on %s", self.url, extra={"event": "web_started"})
        await self._check_accounts(authority)

    async def _check_accounts(self, authority: Any) -> None:
        """One line per account that cannot sign in as configured (unknown login, approver without TOTP)."""
        accounts = self.console.accounts
        if accounts is None:
            return
        from .app import _caller, needs_totp

        for acc in accounts.accounts().values():
            try:
                me = await authority.call(_caller(acc.login), "whoami", {})
            except Exception:  # noqa: BLE001 - a check, never a reason not to start
                continue
            if not me.get("known", True):
                log.warning("web account %s is not a person of [[people]] or an administrator: it cannot sign in",
                            acc.login, extra={"event": "web_account_unbound", "login": acc.login})
            elif needs_totp(self.config, me) and not acc.totp_secret:
                log.warning("web account %s approves or administers but has no TOTP: it cannot sign in"
                            " (dlpgate web-user add FILE %s)", acc.login, acc.login,
                            extra={"event": "web_account_no_totp", "login": acc.login})

    async def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._server.force_exit = True
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        self._sock.close()


class _Deferred:
    """The ASGI app of a WebServer whose console is made at start (uvicorn wants an app up front)."""

    def __init__(self, web: WebServer) -> None:
        self.web = web

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.web.console.app(scope, receive, send)


def _quiet_server_class() -> type:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its signal handlers: the gateway owns SIGTERM, SIGINT and SIGHUP."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def _QuietServer(cfg: Any) -> Any:  # noqa: N802 - a class built late (uvicorn imported only when used)
    return _quiet_server_class()(cfg)
