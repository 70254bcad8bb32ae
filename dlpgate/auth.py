"""SMTP AUTH credentials: a file of per-user salted scrypt hashes, never a plain-text password.

One line per user, `login:$scrypt$n=16384,r=8,p=1$<salt b64>$<key b64>`; `#` starts a comment.
Logins are compared case-insensitively (they are usually mail addresses). The file is re-read
when its mtime or size changes, so adding a user needs no restart. Verification costs ~50 ms of
CPU on purpose (brute force); the SMTP layer runs it in `verify_async`, off the event loop, on a
small dedicated thread pool so a flood of AUTH attempts cannot starve the accept path's threads.

Create users with `dlpgate auth add FILE LOGIN` (password read twice from the terminal, or once
from stdin with `--password-stdin`; an existing login keeps its password unless `--force`);
`remove`, `list` likewise. Each says what it did; a problem is one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError

DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_N = 2**20  # bounds on parameters read from the file: a hostile line must not eat the host's memory
MAX_R = 32
MAX_P = 16

_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dlpgate-auth")


@dataclass(frozen=True)
class ScryptHash:
    """One stored credential: scrypt parameters, salt and derived key."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def encode(self) -> str:
        b64 = base64.b64encode
        return (f"$scrypt$n={self.n},r={self.r},p={self.p}$"
                f"{b64(self.salt).decode()}${b64(self.key).decode()}")

    @classmethod
    def decode(cls, text: str) -> ScryptHash:
        """Parse `$scrypt$n=..,r=..,p=..$salt$key`; ValueError with a reason when malformed."""
        parts = text.strip().split("$")
        if len(parts) != 5 or parts[0] != "" or parts[1] != "scrypt":
            raise ValueError("expected $scrypt$n=N,r=R,p=P$salt$key")
        try:
            params = dict(kv.split("=", 1) for kv in parts[2].split(","))
            n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
            salt = base64.b64decode(parts[3], validate=True)
            key = base64.b64decode(parts[4], validate=True)
        except (KeyError, ValueError) as e:
            raise ValueError(f"bad scrypt parameters or base64 ({type(e).__name__})") from None
        if n < 2 or n & (n - 1) or n > MAX_N or not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
            raise ValueError("scrypt parameters out of range")
        if len(salt) < 8 or len(key) < 16:
            raise ValueError("salt or key too short")
        return cls(n, r, p, salt, key)

    def derive(self, password: bytes) -> bytes:
        maxmem = 128 * self.r * (self.n + self.p + 2) + 1024 * 1024
        return hashlib.scrypt(password, salt=self.salt, n=self.n, r=self.r, p=self.p,
                              maxmem=maxmem, dklen=len(self.key))

    def matches(self, password: bytes) -> bool:
        return hmac.compare_digest(self.derive(password), self.key)


def hash_password(password: str | bytes, *, n: int = DEFAULT_N, r: int = DEFAULT_R,
                  p: int = DEFAULT_P) -> str:
    """A fresh per-user salt and the scrypt key of `password`, encoded for the users file."""
    pw = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(SALT_BYTES)
    h = ScryptHash(n, r, p, salt, b"\0" * KEY_BYTES)
    return ScryptHash(n, r, p, salt, h.derive(pw)).encode()


def _normal_login(login: str) -> str:
    return login.strip().lower()


def parse_users(text: str, source: str) -> dict[str, ScryptHash]:
    """Users file text -> {login: hash}. ConfigError names the file and line (never a secret)."""
    users: dict[str, ScryptHash] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        login, sep, encoded = line.partition(":")
        if not sep or not login.strip():
            raise ConfigError(f"{source}:{no}: expected LOGIN:$scrypt$...")
        try:
            users[_normal_login(login)] = ScryptHash.decode(encoded)
        except ValueError as e:
            raise ConfigError(f"{source}:{no}: {e}") from None
    return users


# a hash to burn the same CPU on for unknown logins: no timing difference reveals who exists
_DUMMY = ScryptHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, b"dlpgate-dummy-salt", b"\0" * KEY_BYTES)


class FileAuthenticator:
    """aiosmtpd `authenticator=` callable backed by a users file; `verify_async` for the event loop."""

    _cache: dict[str, tuple[tuple[int, int, int], dict[str, ScryptHash]]] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def users(self) -> dict[str, ScryptHash]:
        """The parsed file, re-read only when it changed (the factory builds one of us per connection)."""
        key = str(self.path)
        try:
            st = self.path.stat()
        except OSError as e:
            raise ConfigError(f"smtp.auth_users_file: cannot read {self.path}: {e.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        users = parse_users(self.path.read_text(encoding="utf-8"), str(self.path))
        with self._cache_lock:
            self._cache[key] = (stamp, users)
        return users

    def verify(self, login: bytes | str, password: bytes) -> str | None:
        """The normalised login when the password matches, else None. Constant work either way."""
        try:
            name = _normal_login(login.decode("utf-8") if isinstance(login, bytes) else login)
        except UnicodeDecodeError:
            name = ""
        try:
            users = self.users()
        except ConfigError:
            users = {}  # fail closed: an unreadable or broken file lets nobody in
        h = users.get(name)
        ok = (h if h is not None else _DUMMY).matches(password)
        return name if ok and h is not None else None

    async def verify_async(self, login: bytes | str, password: bytes) -> str | None:
        return await asyncio.get_running_loop().run_in_executor(_POOL, self.verify, login, password)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        """Synchronous aiosmtpd protocol (GatewaySMTP uses `verify_async` instead)."""
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = self.verify(auth_data.login, auth_data.password)
        return AuthResult(success=user is not None, handled=False, auth_data=user)


# ------------------------------------------------------------------------------ users file tool
def _write_users(path: Path, lines: Sequence[str]) -> None:
    """Atomic replace, 0600: the file holds hashes, still nobody else's business."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    parse_users(text, str(path))  # refuse to rewrite a file we cannot read back
    return text.splitlines()


def _check_login(login: str) -> str:
    if not login.strip() or ":" in login or any(c.isspace() for c in login.strip()):
        raise InputError("login must be non-empty, without ':' or spaces")
    return _normal_login(login)


def set_user(path: str | os.PathLike[str], login: str, password: str | bytes, *, replace: bool = True) -> bool:
    """Add `login` or (with replace) change its password. True when it replaced an existing login."""
    name = _check_login(login)
    if not password:
        raise InputError("empty password refused")
    p = Path(path)
    lines = _read_lines(p)
    kept = [ln for ln in lines if _normal_login(ln.partition(":")[0]) != name or ln.lstrip().startswith("#")]
    existed = len(kept) != len(lines)
    if existed and not replace:
        raise InputError(f"{name} already has a password in {p}; add --force to replace it")
    _write_users(p, [*kept, f"{name}:{hash_password(password)}"])
    return existed


def remove_user(path: str | os.PathLike[str], login: str) -> bool:
    p = Path(path)
    name = _normal_login(login)
    lines = _read_lines(p)
    kept = [ln for ln in lines if ln.lstrip().startswith("#") or _normal_login(ln.partition(":")[0]) != name]
    if len(kept) == len(lines):
        return False
    _write_users(p, kept)
    return True


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise InputError("no password on stdin (give one line)")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InputError("no terminal to ask for the password: pipe it in with --password-stdin")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Again: ")
    except EOFError:
        raise InputError("no password given") from None
    if again != first:
        raise InputError("passwords differ")
    return first


# --------------------------------------------------------------------------- `dlpgate auth ...`
def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """`auth add|remove|list FILE [LOGIN]` under the main parser (and `python -m dlpgate.auth`)."""
    parser_class = sub._parser_class  # noqa: SLF001 - the caller's one-line-error parser
    top = sub.add_parser("auth", parents=[common], help="SMTP AUTH users file: add|remove|list FILE [LOGIN]")
    asub = top.add_subparsers(dest="auth_command", required=True, parser_class=parser_class)
    a = asub.add_parser("add", parents=[common], help="add a user (--force: change an existing password)")
    a.add_argument("file", metavar="FILE")
    a.add_argument("login", metavar="LOGIN")
    a.add_argument("--password-stdin", action="store_true", help="read the password from one stdin line")
    a.add_argument("--force", action="store_true", help="replace the password of an existing login")
    a.set_defaults(func=cmd_add, config_needed=False)
    r = asub.add_parser("remove", parents=[common], help="remove a user")
    r.add_argument("file", metavar="FILE")
    r.add_argument("login", metavar="LOGIN")
    r.set_defaults(func=cmd_remove, config_needed=False)
    ls = asub.add_parser("list", parents=[common], help="list logins (never hashes)")
    ls.add_argument("file", metavar="FILE")
    ls.set_defaults(func=cmd_list, config_needed=False)


def cmd_add(args: argparse.Namespace, config: Any = None) -> int:
    replaced = set_user(args.file, args.login, _read_password(args.password_stdin), replace=args.force)
    name = _normal_login(args.login)
    print(f"{'changed the password of' if replaced else 'added'} {name} in {args.file}")
    return 0


def cmd_remove(args: argparse.Namespace, config: Any = None) -> int:
    if not Path(args.file).exists():
        raise InputError(f"{args.file}: no such users file")
    if not remove_user(args.file, args.login):
        raise InputError(f"{_normal_login(args.login)}: no such login in {args.file}")
    print(f"removed {_normal_login(args.login)} from {args.file}")
    return 0


def cmd_list(args: argparse.Namespace, config: Any = None) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{args.file}: no such users file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{args.file}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    for login in sorted(parse_users(text, args.file)):
        print(login)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dlpgate.auth add|remove|list FILE [LOGIN]`: the same as `dlpgate auth ...`."""
    from .cli import main as cli_main

    return cli_main(["auth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
