"""The console's routes: server-rendered pages, every read and every decision through the authority.

Nothing here touches the store. A page asks `Authority.call(Caller(login, None, "web"), op, args)`
exactly as the CLI does over the socket, so routing, self-approval, the two-person rule and the
audit entry are the same for a click as for a command. The console adds only what a browser needs:
who is signed in (guard.py), CSRF tokens, a confirmation step before every decision, and escaping
(Jinja2 autoescape: subjects, file names and display names are attacker input).

A decision is never one request: the form on the message page posts to a confirmation page that
keeps the decision server-side under a one-time nonce; only posting that nonce back (with the CSRF
token) acts. A link in a notice is a plain GET of a page and cannot decide anything.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Config
from ..errors import DlpgateError, InputError, NotFound, PermissionDenied, StateError
from ..masking import mask_text
from .accounts import AccountFile, normal_login, totp_matches
from .guard import COOKIE, PRE_COOKIE, Session, Sessions, Throttle, csrf_ok
from .i18n import LANGS, translate
from .peer import local_peer_uid

log = logging.getLogger("dlpgate.web")

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
_ID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
_NEXT = re.compile(r"^/(?:[A-Za-z0-9_-]+/?)*$")
MAX_FORM_BYTES = 64 * 1024

def _caller(login: str) -> Any:
    """dlpgate.control.Caller for a signed-in login (imported late: control imports the store)."""
    from ..control import Caller

    return Caller(login, None, "web")


class SecurityHeaders:
    """Pure ASGI middleware: the same headers on every response, static files and errors included."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")
        if scope.get("method") == "POST":
            # forms are small and browsers always say how small: no length, or too long, is refused
            # before a byte of the body is read (a chunked or endless body cannot fill memory)
            length = dict(scope.get("headers") or []).get(b"content-length", b"")
            if not length.isdigit() or int(length) > MAX_FORM_BYTES:
                status = 411 if not length.isdigit() else 413
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *self.headers]})
                await send({"type": "http.response.body", "body": b"request body refused\n"})
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"server"]
                headers += self.headers
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Console:
    """One console per gateway process: sessions, throttles and the Starlette app."""

    def __init__(self, config: Config, authority: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        web = config.web
        self.config = config
        self.authority = authority
        self.accounts = AccountFile(config.beside(web.users_file)) if web.users_file else None
        self.sessions = Sessions(web.session_idle, clock)
        self.by_account = Throttle(web.lockout_after, web.lockout_seconds, clock)
        self.by_address = Throttle(max(20, 4 * web.lockout_after), web.lockout_seconds, clock)
        self.proxies = tuple(ipaddress.ip_network(n, strict=False) for n in web.trusted_proxies)
        self.proxy_uids = _uids(web.proxy_users)
        self.secure_cookie = bool(web.tls_cert) or web.base_url.startswith("https://")
        self._totp_step: dict[str, int] = {}  # login -> last accepted TOTP step (no replay)
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                               autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = _when
        self.env.filters["size"] = _size
        self.env.filters["domains"] = _domains
        self.env.filters["top"] = _top_finding
        routes = [
            Route("/", self.home),
            Route("/signin", self.signin, methods=["GET", "POST"]),
            Route("/signout", self.signout, methods=["POST"]),
            Route("/lang", self.set_lang, methods=["POST"]),
            Route("/approvals", self.approvals),
            Route("/m/{id}", self.message),
            Route("/m/{id}/decide", self.decide, methods=["POST"]),
            Route("/mine", self.mine),
            Route("/mine/recall", self.recall, methods=["POST"]),
            Route("/confirm", self.confirm, methods=["POST"]),
            Route("/admin", self.admin),
            Route("/admin/audit.json", self.audit_export),
            Route("/admin/verify", self.verify, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        self.app = SecurityHeaders(Starlette(routes=routes, exception_handlers={404: self.not_found, 405: self.not_found}),
                                   hsts=bool(web.tls_cert))

    def reconfigure(self, config: Config) -> None:
        """New policy from a reload (sessions and lock-outs carry over)."""
        self.config = config
        users = config.beside(config.web.users_file)
        if users != (str(self.accounts.path) if self.accounts else ""):
            self.accounts = AccountFile(users) if users else None
        self.proxies = tuple(ipaddress.ip_network(n, strict=False) for n in config.web.trusted_proxies)
        self.proxy_uids = _uids(config.web.proxy_users)

    # ------------------------------------------------------------------ plumbing
    def _lang(self, session: Session | None) -> str:
        return session.lang if session is not None and session.lang in LANGS else self.config.web.language

    def render(self, request: Request, name: str, session: Session | None, status: int = 200,
               **ctx: Any) -> HTMLResponse:
        lang = self._lang(session)

        def t(key: str, **kw: Any) -> str:
            return translate(lang, key, **kw)

        def age(seconds: Any) -> str:
            s = max(0, int(float(seconds or 0)))
            if s >= 86400:
                return t("age.d", n=s // 86400)
            if s >= 3600:
                return t("age.h", n=s // 3600)
            return t("age.m", n=max(1, s // 60) if s else 0)

        # where the language switch returns to: this page if it can be fetched again, else home
        path = ctx.pop("path", request.url.path if request.method == "GET" else "/")
        html = self.env.get_template(name).render(
            t=t, age=age, lang=lang, session=session, me=ctx.pop("me", None), path=path, **ctx)
        return HTMLResponse(html, status_code=status)

    def _set_cookie(self, response: Response, session: Session) -> None:
        """The signed-in session's cookie, or the pre-session's (a sign-in form's CSRF) under its own
        name, so an abandoned sign-in page never replaces a signed-in session."""
        name = COOKIE if session.login else PRE_COOKIE
        response.set_cookie(name, session.token, httponly=True, samesite="strict", secure=self.secure_cookie,
                            path="/")
        if session.login:
            response.delete_cookie(PRE_COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookie)

    def _pre_session(self, request: Request) -> Session | None:
        s = self.sessions.get(request.cookies.get(PRE_COOKIE))
        return s if s is not None and not s.login else None

    def _form_session(self, request: Request, csrf: str | None) -> Session | None:
        """Whichever of this browser's sessions issued `csrf` (the signed-in one or the sign-in form's)."""
        for s in (self.sessions.get(request.cookies.get(COOKIE)), self._pre_session(request)):
            if csrf_ok(s, csrf):
                return s
        return None

    def _proxy_account(self, request: Request) -> bool:
        """A connection from a trusted proxy's address is the proxy's only if it comes from another
        host, or from this host's socket of an account in `[web] proxy_users` (peer.py): every local
        account can connect from 127.0.0.1."""
        client, server = request.client, request.scope.get("server")
        if client is None or not server:
            return False
        uid = local_peer_uid((client.host, client.port), (str(server[0]), int(server[1])))
        if uid is None:
            return not _loopback(client.host)  # another host's proxy (a loopback peer must be found)
        return uid in self.proxy_uids

    def _client(self, request: Request) -> str:
        return request.client.host if request.client is not None else ""

    def _from_proxy(self, request: Request) -> bool:
        try:
            addr = ipaddress.ip_address(self._client(request))
        except ValueError:
            return False
        return any(addr in net for net in self.proxies)

    async def _form(self, request: Request) -> Mapping[str, str]:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise InputError("form too large")
        form = await request.form(max_files=0, max_fields=50)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _session(self, request: Request) -> tuple[Session | None, Response | None]:
        """The signed-in session, or the redirect to sign in (proxy mode: a session for the header's login)."""
        s = self.sessions.get(request.cookies.get(COOKIE))
        if self.proxies and self._from_proxy(request):
            login = normal_login(request.headers.get(self.config.web.proxy_login_header, ""))
            if login and (s is None or s.login != login) and not self._proxy_account(request):
                log.warning("login header refused: the connection is from this host but not from an account in"
                            " web.proxy_users", extra={"event": "web_proxy_refused", "client": self._client(request)})
                login = ""
            if login and (s is None or s.login != login):
                s = self.sessions.new(login, self._lang(s))
                request.state.new_cookie = s
                log.info("signed in through the trusted proxy", extra={"event": "web_signin", "via": "proxy"})
        if s is not None and s.login:
            return s, None
        if request.method == "GET" and request.headers.get("sec-fetch-site") == "cross-site":
            # a link followed from another site (webmail): SameSite=Strict withheld the cookie. Load the
            # page once more from here, where the browser sends it; no script, no token in the URL.
            return None, HTMLResponse('<!doctype html><meta http-equiv="refresh" content="0">', status_code=200)
        nxt = request.url.path if _NEXT.match(request.url.path) else "/"
        expired = "&expired=1" if request.cookies.get(COOKIE) else ""
        return None, RedirectResponse(f"/signin?next={nxt}{expired}", status_code=303)

    async def _call(self, session: Session, op: str, args: dict[str, Any]) -> Any:
        return await self.authority.call(_caller(session.login), op, args)

    async def _page(self, request: Request,
                    body: Callable[[Session, dict[str, Any]], Awaitable[Response]]) -> Response:
        """Sign-in check, whoami, then the page; typed errors become a page of their own."""
        session, redirect = self._session(request)
        if session is None:
            assert redirect is not None
            return redirect
        try:
            me = await self._call(session, "whoami", {})
            response = await body(session, me)
        except DlpgateError as e:
            response = self.error_page(request, session, e)
        new = getattr(request.state, "new_cookie", None)
        if new is not None:
            self._set_cookie(response, new)
        return response

    def error_page(self, request: Request, session: Session | None, e: Exception) -> HTMLResponse:
        if isinstance(e, PermissionDenied):
            status, key = 403, "err.forbidden"
        elif isinstance(e, NotFound):
            status, key = 404, "err.notfound"
        elif isinstance(e, StateError):
            status, key = 409, "err.title"
        elif isinstance(e, InputError):
            status, key = 400, "err.title"
        else:  # Unavailable, StoreError: the gateway could not answer
            status, key = 503, "err.unavailable"
        log.info("web request refused", extra={"event": "web_refused", "error": type(e).__name__,
                                               "route": request.url.path.split("/")[1] if request.url.path else ""})
        return self.render(request, "error.html", session, status=status, key=key, detail=mask_text(str(e)))

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """404 and 405 as a page of the console (same headers, same language), not a bare text."""
        s = self.sessions.get(request.cookies.get(COOKIE))
        status = int(getattr(exc, "status_code", 404))
        return self.render(request, "error.html", s, status=status, key="err.notfound", detail="")

    async def _posted(self, request: Request) -> tuple[Session | None, Mapping[str, str], Response | None]:
        """A POST from a signed-in session with the right CSRF token, or the refusal."""
        session, redirect = self._session(request)
        if session is None:
            return None, {}, redirect
        try:
            form = await self._form(request)
        except InputError as e:
            return session, {}, self.error_page(request, session, e)
        if not csrf_ok(session, form.get("csrf")):
            log.warning("form refused: missing or wrong CSRF token", extra={"event": "web_csrf"})
            return session, form, self.render(request, "error.html", session, status=403, key="err.csrf",
                                              detail="")
        return session, form, None

    # ------------------------------------------------------------------ sign-in
    async def signin(self, request: Request) -> Response:
        signed_in = self.sessions.get(request.cookies.get(COOKIE))
        s = self._pre_session(request)
        if request.method == "GET":
            if signed_in is not None and signed_in.login:
                return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
            s = s or self.sessions.new("", self._lang(signed_in))
            notice = "signin.expired" if request.query_params.get("expired") else ""
            if self.accounts is None:
                notice = "signin.proxy_only"
            r = self.render(request, "signin.html", s, next=_safe_next(request.query_params.get("next")),
                            notice=notice, error="", login="")
            self._set_cookie(r, s)
            return r
        if self.accounts is None:
            return self.render(request, "error.html", s, status=403, key="signin.proxy_only", detail="")
        try:
            form = await self._form(request)
        except InputError as e:
            return self.error_page(request, s, e)
        if not csrf_ok(s, form.get("csrf")):
            log.warning("sign-in refused: missing or wrong CSRF token", extra={"event": "web_csrf"})
            return self.render(request, "error.html", s, status=403, key="err.csrf", detail="")
        assert s is not None
        login = normal_login(form.get("login", ""))[:128]
        nxt = _safe_next(form.get("next"))
        addr = self._client(request)

        def again(error: str, status: int = 401) -> Response:
            return self.render(request, "signin.html", s, status=status, next=nxt, notice="", error=error,
                               login=login)

        # a local reverse proxy makes every browser 127.0.0.1: no address throttle there (the account
        # lock-out still holds), or one person's typos would lock the whole office out
        by_addr = not _loopback(addr)
        if self.by_account.locked("acct:" + login) or (by_addr and self.by_address.locked("addr:" + addr)):
            log.warning("sign-in refused: locked", extra={"event": "web_signin_locked", "client": addr})
            return again("signin.locked", 429)
        account = await self.accounts.check_password_async(login, form.get("password", ""))
        ok = account is not None
        step: int | None = None
        if account is not None and account.totp_secret:
            step = totp_matches(account.totp_secret, form.get("totp", ""), self._totp_step.get(account.login, 0),
                                time.time())
            ok = step is not None
        if not ok:
            locked = self.by_account.fail("acct:" + login)
            if by_addr:
                locked = self.by_address.fail("addr:" + addr) or locked
            log.warning("sign-in failed", extra={"event": "web_signin_failed", "client": addr, "locked": locked})
            return again("signin.locked" if locked else "signin.failed", 429 if locked else 401)
        assert account is not None
        try:
            me = await self.authority.call(_caller(account.login), "whoami", {})
            if not me.get("known", True):
                raise PermissionDenied("not a person of the gateway")
        except (PermissionDenied, NotFound):
            log.warning("sign-in refused: account not bound to a person", extra={"event": "web_signin_unbound"})
            return again("signin.unbound", 403)
        if needs_totp(self.config, me) and not account.totp_secret:
            log.warning("sign-in refused: TOTP required", extra={"event": "web_signin_no_totp"})
            return again("signin.need_totp", 403)
        if step is not None:
            self._totp_step[account.login] = step
        self.by_account.clear("acct:" + login)
        self.sessions.end(s.token)  # a fresh token after sign-in: no session fixation
        new = self.sessions.new(account.login, s.lang)
        log.info("signed in", extra={"event": "web_signin", "login": account.login, "client": addr})
        done = RedirectResponse(nxt, status_code=303)
        self._set_cookie(done, new)
        return done

    async def signout(self, request: Request) -> Response:
        session, form, refused = await self._posted(request)
        if refused is not None:
            return refused
        assert session is not None
        self.sessions.end(session.token)
        log.info("signed out", extra={"event": "web_signout", "login": session.login})
        fresh = self.sessions.new("", session.lang)
        r = self.render(request, "signin.html", fresh, next="/", notice="signedout", error="", login="")
        r.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookie)
        self._set_cookie(r, fresh)
        return r

    async def set_lang(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except InputError as e:
            return self.error_page(request, None, e)
        s = self._form_session(request, form.get("csrf"))
        if s is None:
            return self.render(request, "error.html", None, status=403, key="err.csrf", detail="")
        if form.get("lang") in LANGS:
            s.lang = form["lang"]
        return RedirectResponse(_safe_next(form.get("next")), status_code=303)

    # ------------------------------------------------------------------ pages
    async def home(self, request: Request) -> Response:
        async def body(session: Session, me: dict[str, Any]) -> Response:
            approver = bool(me.get("approver_addresses")) or "admin" in (me.get("roles") or ())
            return RedirectResponse("/approvals" if approver else "/mine", status_code=303)

        return await self._page(request, body)

    async def approvals(self, request: Request) -> Response:
        async def body(session: Session, me: dict[str, Any]) -> Response:
            rows = await self._call(session, "quarantine.list", {"state": "held"})
            now = time.time()
            for r in rows:
                r["age_seconds"] = r.get("age_seconds", now - float(r.get("arrived") or now))
            mine = sorted((r for r in rows if r.get("can_decide")), key=_deadline)
            others = [] if _is_admin(me) else sorted((r for r in rows if not r.get("can_decide")), key=_deadline)
            return self.render(request, "approvals.html", session, me=me, rows=mine, others=others)

        return await self._page(request, body)

    async def message(self, request: Request) -> Response:
        mid = request.path_params["id"]

        async def body(session: Session, me: dict[str, Any]) -> Response:
            if not _ID.match(mid):
                raise NotFound("no such message")
            d = await self._call(session, "quarantine.show", {"id": mid})
            can = d.get("can_decide")
            if can is None:  # older authorities: the authority still checks on decide
                mine = set(me.get("approver_addresses") or ())
                can = d.get("state") == "held" and bool(mine & set(d.get("approvers", []) + d.get("deputies", [])))
            approved = sorted({a.get("approver") for a in d.get("decisions", []) if a.get("decision") == "release"})
            needed = d.get("approvals_needed")
            if needed is None:
                needed = max(0, int(d.get("approvals_required") or 1) - len(approved))
            routed = set(d.get("approvers") or ()) | set(d.get("deputies") or ())
            as_addresses = [a for a in me.get("addresses") or () if a in routed]
            return self.render(request, "message.html", session, me=me, d=d, can_decide=bool(can),
                               approved=approved, needed=needed, as_addresses=as_addresses)

        return await self._page(request, body)

    async def decide(self, request: Request) -> Response:
        """Step one of a decision: remember it under a nonce and show the confirmation page."""
        mid = request.path_params["id"]
        session, form, refused = await self._posted(request)
        if refused is not None:
            return refused
        assert session is not None
        decision = form.get("decision", "")
        reason = mask_text(" ".join(form.get("reason", "").split())[:500])  # shown on the next page
        try:
            if not _ID.match(mid):
                raise NotFound("no such message")
            if decision not in ("release", "reject"):
                raise InputError("decision must be release or reject")
            if decision == "reject" and not reason:
                raise InputError(translate(self._lang(session), "decide.reason_reject"))
            me = await self._call(session, "whoami", {})
            d = await self._call(session, "quarantine.show", {"id": mid})
        except DlpgateError as e:
            return self.error_page(request, session, e)
        action = {"op": "quarantine.decide", "id": d["id"], "decision": decision, "reason": reason}
        if form.get("approver"):  # a person with two routed addresses says which one acts (the authority checks)
            action["approver"] = form["approver"].strip().lower()[:200]
        nonce = self._pend(session, action)
        return self.render(request, "confirm.html", session, me=me, d=d, action=decision, reason=reason,
                           nonce=nonce, back=f"/m/{d['id']}")

    async def mine(self, request: Request) -> Response:
        async def body(session: Session, me: dict[str, Any]) -> Response:
            delayed: list[dict[str, Any]] = []
            held: list[dict[str, Any]] = []
            now = time.time()
            for addr in me.get("addresses") or ():
                for r in await self._call(session, "outbox.list", {"sender": addr}):
                    r["sends_in"] = r.get("sends_in_seconds", max(0.0, float(r.get("due_at") or now) - now))
                    delayed.append(r)
                held += await self._call(session, "quarantine.list", {"sender": addr, "state": "held"})
            delayed.sort(key=lambda r: r["sends_in"])
            held.sort(key=_deadline)
            return self.render(request, "mine.html", session, me=me, delayed=delayed, held=held)

        return await self._page(request, body)

    async def recall(self, request: Request) -> Response:
        session, form, refused = await self._posted(request)
        if refused is not None:
            return refused
        assert session is not None
        mid = form.get("id", "")
        try:
            if not _ID.match(mid):
                raise NotFound("no such message")
            me = await self._call(session, "whoami", {})
            rows = []
            for addr in me.get("addresses") or ():
                rows += [r for r in await self._call(session, "outbox.list", {"sender": addr})
                         if str(r.get("id", "")).startswith(mid)]
            if not rows:
                raise NotFound(f"no delayed message {mid} of yours")
        except DlpgateError as e:
            return self.error_page(request, session, e)
        nonce = self._pend(session, {"op": "outbox.recall", "id": rows[0]["id"]})
        return self.render(request, "confirm.html", session, me=me, d=rows[0], action="recall", reason="",
                           nonce=nonce, back="/mine")

    def _pend(self, session: Session, action: dict[str, str]) -> str:
        nonce = secrets.token_urlsafe(16)
        if len(session.pending) > 20:
            session.pending.clear()
        session.pending[nonce] = json.dumps(action)
        return nonce

    async def confirm(self, request: Request) -> Response:
        """Step two: the one-time nonce from the confirmation page, and only then the authority acts."""
        session, form, refused = await self._posted(request)
        if refused is not None:
            return refused
        assert session is not None
        raw = session.pending.pop(form.get("nonce", ""), None)
        if raw is None:
            return self.render(request, "error.html", session, status=403, key="err.csrf", detail="")
        action = json.loads(raw)
        try:
            me = await self._call(session, "whoami", {})
            if action["op"] == "outbox.recall":
                await self._call(session, "outbox.recall", {"id": action["id"]})
                msg, back = translate(self._lang(session), "done.recall"), "/mine"
            else:
                res = await self._call(session, "quarantine.decide", {
                    k: action[k] for k in ("id", "decision", "reason", "approver") if k in action})
                lang = self._lang(session)
                if action["decision"] == "reject":
                    msg = translate(lang, "done.reject")
                elif res.get("state") == "held":
                    msg = translate(lang, "done.partial", n=res.get("approvals"), required=res.get("required"))
                else:
                    msg = translate(lang, "done.release")
                back = f"/m/{action['id']}"
            log.info("decision made in the console", extra={"event": "web_" + action["op"].replace(".", "_"),
                                                             "msg_id": action["id"], "login": session.login})
        except DlpgateError as e:
            return self.error_page(request, session, e)
        return self.render(request, "done.html", session, me=me, msg=msg, back=back)

    # ------------------------------------------------------------------ administration
    async def admin(self, request: Request) -> Response:
        q = request.query_params

        async def body(session: Session, me: dict[str, Any]) -> Response:
            if not _is_admin(me):
                raise PermissionDenied("administrators only")
            args = {k: q[k].strip()[:200] for k in ("sender", "since", "until", "attachment_hash")
                    if q.get(k, "").strip()}
            state = q.get("state", "held").strip() or "held"
            searched = bool(q)
            rows = await self._call(session, "quarantine.list",
                                    {"state": state, **({"sender": args["sender"]} if "sender" in args else {})})
            sendlog = await self._call(session, "log.search", args) if searched else []
            return self.render(request, "admin.html", session, me=me, rows=rows, sendlog=sendlog, q=args,
                               state=state, searched=searched, verify=None)

        return await self._page(request, body)

    async def audit_export(self, request: Request) -> Response:
        q = request.query_params

        async def body(session: Session, me: dict[str, Any]) -> Response:
            args = {k: q[k].strip()[:200] for k in ("since", "until", "id") if q.get(k, "").strip()}
            rows = await self._call(session, "audit.export", args)
            text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            return Response(text, media_type="application/x-ndjson; charset=utf-8",
                            headers={"content-disposition": 'attachment; filename="dlpgate-audit.jsonl"'})

        return await self._page(request, body)

    async def verify(self, request: Request) -> Response:
        session, form, refused = await self._posted(request)
        if refused is not None:
            return refused
        assert session is not None
        try:
            me = await self._call(session, "whoami", {})
            if not _is_admin(me):
                raise PermissionDenied("administrators only")
            result = await self._call(session, "audit.verify", {})
            rows = await self._call(session, "quarantine.list", {"state": "held"})
        except DlpgateError as e:
            return self.error_page(request, session, e)
        return self.render(request, "admin.html", session, me=me, rows=rows, sendlog=[], q={}, state="held",
                           searched=False, verify=result, path="/admin")


# ---------------------------------------------------------------------- helpers
def _safe_next(value: str | None) -> str:
    """Only a path of this console: never an open redirect to another site."""
    v = (value or "").strip()
    return v if v and _NEXT.match(v) and not v.startswith("//") else "/"


def needs_totp(config: Config, me: Mapping[str, Any]) -> bool:
    """`[web] require_totp`: everyone, or whoever approves, stands in for an approver, or administers."""
    policy = config.web.require_totp
    if policy == "all":
        return True
    roles = set(me.get("roles") or ())
    return policy == "approvers" and bool(roles & {"approver", "deputy", "admin"} or me.get("approver_addresses"))


def _uids(names: tuple[str, ...]) -> frozenset[int]:
    from ..config import account_uid

    return frozenset(u for u in (account_uid(n) for n in names) if u is not None)


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _is_admin(me: Mapping[str, Any]) -> bool:
    return "admin" in (me.get("roles") or ())


def _deadline(r: Mapping[str, Any]) -> tuple[float, float]:
    """Nearest deadline first (the most urgent on top); no deadline last, then oldest first."""
    exp = r.get("expires_at")
    return (float(exp) if exp else float("inf"), float(r.get("arrived") or 0))


def _domains(recipients: Any) -> str:
    out: list[str] = []
    for r in recipients or ():
        addr = r.get("rcpt", "") if isinstance(r, Mapping) else str(r)
        dom = addr.rpartition("@")[2].lower()
        if dom and dom not in out:
            out.append(dom)
    return ", ".join(out) or "-"


def _top_finding(findings: Any) -> str:
    from ..admin_cli import top_finding

    return top_finding(list(findings or ()))


def _when(ts: Any) -> str:
    if ts in (None, ""):
        return "-"
    if isinstance(ts, str):  # the authority's ISO times (audit trail)
        try:
            return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return ts
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(ts)))


def _size(n: Any) -> str:
    v = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GB"  # pragma: no cover
