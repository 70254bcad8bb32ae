"""What stands between the network and the authority: sessions, CSRF tokens, sign-in throttling.

- A session is a random 256-bit token in a cookie (nothing else is in the cookie: no login, no
  identifier); the server keeps login, CSRF token, language and last activity. Sessions live in the
  gateway's memory: a restart signs everyone out, which is the safe direction.
- Every form carries the session's CSRF token (before sign-in: a pre-session's); a POST without the
  right one is refused before anything else runs. SameSite=Strict cookies are the second wall.
- Sign-in failures are counted per account and per client address. `lockout_after` failures of one
  account (wrong password or wrong TOTP) lock it for `lockout_seconds`, even for the right password;
  an address with many failures across accounts is throttled the same way.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "dlpgate_session"
PRE_COOKIE = "dlpgate_pre"
MAX_SESSIONS = 10_000


@dataclass
class Session:
    token: str
    csrf: str
    login: str  # "" = not signed in (a pre-session: it only carries the sign-in form's CSRF token)
    lang: str
    created: float
    last_seen: float
    totp_step: int = 0
    pending: dict[str, str] = field(default_factory=dict)  # confirmation nonces -> action


class Sessions:
    """In-memory sessions with an idle timeout; `clock` is injectable for tests."""

    def __init__(self, idle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.clock = clock
        self._by_token: dict[str, Session] = {}
        self._made = 0

    def new(self, login: str, lang: str) -> Session:
        self._evict()
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), login, lang, now, now)
        self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        now = self.clock()
        if now - s.last_seen > self.idle:
            self._by_token.pop(token, None)
            return None
        s.last_seen = now
        return s

    def end(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def end_login(self, login: str) -> None:
        for t in [t for t, s in self._by_token.items() if s.login == login]:
            self._by_token.pop(t, None)

    def _evict(self) -> None:
        self._made += 1
        if self._made % 256 and len(self._by_token) < MAX_SESSIONS:
            return  # the idle sweep is O(sessions): now and then, or when full
        now = self.clock()
        for t in [t for t, s in self._by_token.items() if now - s.last_seen > self.idle]:
            self._by_token.pop(t, None)
        if len(self._by_token) >= MAX_SESSIONS:
            # a flood of sign-in pages: drop the oldest pre-sessions first, so nobody signed in is thrown out
            order = sorted(self._by_token.items(), key=lambda kv: (bool(kv[1].login), kv[1].last_seen))
            for t, _ in order[: MAX_SESSIONS // 10]:
                self._by_token.pop(t, None)


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and bool(token) and hmac.compare_digest(session.csrf, str(token))


class Throttle:
    """Failed sign-ins per key; `limit` failures within `window` lock the key for `window`."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._fails: dict[str, list[float]] = {}
        self._until: dict[str, float] = {}

    def locked(self, key: str) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if self.clock() >= until:
            self._until.pop(key, None)
            self._fails.pop(key, None)
            return False
        return True

    def fail(self, key: str) -> bool:
        """Count one failure; True when the key is (now) locked."""
        if self.locked(key):
            return True
        now = self.clock()
        recent = [t for t in self._fails.get(key, ()) if now - t < self.window]
        recent.append(now)
        self._fails[key] = recent
        if len(self._fails) > 100_000:  # bounded memory under a spray of random logins
            for k in list(self._fails)[:10_000]:
                self._fails.pop(k, None)
        if len(recent) >= self.limit:
            self._until[key] = now + self.window
            return True
        return False

    def clear(self, key: str) -> None:
        self._fails.pop(key, None)
