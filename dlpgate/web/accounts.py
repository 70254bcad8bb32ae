"""Local accounts of the web console: salted scrypt password plus a TOTP secret, one line a person.

    login:$scrypt$n=16384,r=8,p=1$<salt b64>$<key b64>:<TOTP secret base32 or empty>

The same scrypt encoding as the SMTP AUTH users file (dlpgate/auth.py); the file is the service
account's alone (0600, atomic replace). A login here is a login of the gateway's identities: the
account only proves "I am tanaka", the authority decides what tanaka may see and do.

`dlpgate web-user add FILE LOGIN [--password-stdin] [--no-totp] [--keep-totp]` creates or changes an
account and prints the TOTP provisioning URI once (for the phone's authenticator app); the password
is never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp

from ..auth import _DUMMY, ScryptHash, _read_password, _write_users, hash_password
from ..errors import ConfigError, InputError

ISSUER = "dlpgate"
# scrypt costs ~50 ms of CPU on purpose; two threads so a flood of sign-ins cannot starve the loop's
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dlpgate-web-auth")


@dataclass(frozen=True)
class Account:
    login: str
    password: ScryptHash
    totp_secret: str  # "" = no second factor enrolled


def normal_login(login: str) -> str:
    return login.strip().lower()


def _check_login(login: str) -> str:
    name = normal_login(login)
    if not name or ":" in name or any(c.isspace() for c in name) or len(name) > 128:
        raise InputError("login must be non-empty, at most 128 characters, without ':' or spaces")
    return name


def parse_accounts(text: str, source: str) -> dict[str, Account]:
    """File text -> {login: Account}. ConfigError names the file and line, never a secret."""
    out: dict[str, Account] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) not in (2, 3) or not fields[0].strip():
            raise ConfigError(f"{source}:{no}: expected LOGIN:$scrypt$...:TOTPSECRET")
        secret = fields[2].strip() if len(fields) == 3 else ""
        try:
            pw = ScryptHash.decode(fields[1])
            if secret:
                pyotp.TOTP(secret).byte_secret()  # valid base32
        except ValueError as e:
            raise ConfigError(f"{source}:{no}: {e}") from None
        except Exception:  # noqa: BLE001 - binascii.Error and friends: a bad secret, named by line only
            raise ConfigError(f"{source}:{no}: the TOTP secret is not base32") from None
        out[normal_login(fields[0])] = Account(normal_login(fields[0]), pw, secret)
    return out


class AccountFile:
    """The accounts file, re-read when it changes (adding a person needs no restart)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()

    def accounts(self) -> dict[str, Account]:
        try:
            st = self.path.stat()
        except OSError as e:
            raise ConfigError(f"web.users_file: cannot read {self.path}: {e.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return self._accounts
        accounts = parse_accounts(self.path.read_text(encoding="utf-8"), str(self.path))
        with self._lock:
            self._stamp, self._accounts = stamp, accounts
        return accounts

    def get(self, login: str) -> Account | None:
        try:
            return self.accounts().get(normal_login(login))
        except ConfigError:
            return None  # fail closed: a broken file lets nobody in

    def check_password(self, login: str, password: str) -> Account | None:
        """The account when the password matches; the same scrypt work for unknown logins."""
        acc = self.get(login)
        pw = password.encode("utf-8", "surrogatepass")[:1024]
        ok = (acc.password if acc is not None else _DUMMY).matches(pw)
        return acc if ok and acc is not None else None

    async def check_password_async(self, login: str, password: str) -> Account | None:
        return await asyncio.get_running_loop().run_in_executor(_POOL, self.check_password, login, password)


def totp_matches(secret: str, code: str, last_step: int, now: float) -> int | None:
    """The time step `code` belongs to (this one or the one either side), if newer than `last_step`.

    A code already used (same or older step) is refused: a code seen over a shoulder or in a proxy
    log cannot be replayed within its 30 seconds.
    """
    code = "".join(code.split())
    if not secret or len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    step = int(now // totp.interval)
    for s in (step - 1, step, step + 1):
        if s > last_step and totp.verify(code, for_time=s * totp.interval):
            return s
    return None


# ------------------------------------------------------------------------------ file tool
def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    parse_accounts(text, str(path))  # refuse to rewrite a file we cannot read back
    return text.splitlines()


def _login_of(line: str) -> str | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    return normal_login(s.partition(":")[0])


def set_account(path: str | os.PathLike[str], login: str, password: str, *, totp: bool = True,
                keep_totp: bool = False) -> str:
    """Create `login` or change its password; returns the TOTP secret in force ("" = none)."""
    name = _check_login(login)
    if len(password) < 8:
        raise InputError("password refused: at least 8 characters")
    p = Path(path)
    lines = _lines(p)
    old = parse_accounts("\n".join(lines), str(p)).get(name)
    if keep_totp and old is not None:
        secret = old.totp_secret
    else:
        secret = pyotp.random_base32() if totp else ""
    kept = [ln for ln in lines if _login_of(ln) != name]
    _write_users(p, [*kept, f"{name}:{hash_password(password)}:{secret}"])
    return secret


def remove_account(path: str | os.PathLike[str], login: str) -> bool:
    p = Path(path)
    name = normal_login(login)
    lines = _lines(p)
    kept = [ln for ln in lines if _login_of(ln) != name]
    if len(kept) == len(lines):
        return False
    _write_users(p, kept)
    return True


def provisioning_uri(login: str, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=normal_login(login), issuer_name=ISSUER)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """`web-user add|remove|list FILE [LOGIN]` under the main parser (like `auth`: no config needed)."""
    parser_class = sub._parser_class  # noqa: SLF001 - the caller's one-line-error parser
    top = sub.add_parser("web-user", parents=[common],
                         help="web console accounts: add|remove|list FILE [LOGIN] (scrypt + TOTP)")
    wsub = top.add_subparsers(dest="web_user_command", required=True, parser_class=parser_class)
    a = wsub.add_parser("add", parents=[common],
                        help="add an account or change its password (prints the TOTP URI once)")
    a.add_argument("file", metavar="FILE")
    a.add_argument("login", metavar="LOGIN", help="the person's login, as in the gateway's [[people]]")
    a.add_argument("--password-stdin", action="store_true", help="read the password from one stdin line")
    a.add_argument("--no-totp", action="store_true",
                   help="no second factor (refused at sign-in for approvers unless [web] require_totp = none)")
    a.add_argument("--keep-totp", action="store_true", help="change the password only, keep the enrolled TOTP")
    a.set_defaults(func=cmd_add, config_needed=False)
    r = wsub.add_parser("remove", parents=[common], help="remove an account")
    r.add_argument("file", metavar="FILE")
    r.add_argument("login", metavar="LOGIN")
    r.set_defaults(func=cmd_remove, config_needed=False)
    ls = wsub.add_parser("list", parents=[common], help="list logins and whether TOTP is enrolled (never secrets)")
    ls.add_argument("file", metavar="FILE")
    ls.set_defaults(func=cmd_list, config_needed=False)


def cmd_add(args: argparse.Namespace, config: Any = None) -> int:
    _check_login(args.login)
    name = normal_login(args.login)
    secret = set_account(args.file, args.login, _read_password(args.password_stdin),
                         totp=not args.no_totp, keep_totp=args.keep_totp)
    if secret and not args.keep_totp:
        print(f"saved {name} in {args.file}. Enrol this in the person's authenticator app now;"
              " it is not shown again:")
        print(provisioning_uri(args.login, secret))
    elif not secret:
        print(f"saved {name} in {args.file} without TOTP")
    else:
        print(f"changed the password of {name} in {args.file}; TOTP unchanged")
    return 0


def cmd_remove(args: argparse.Namespace, config: Any = None) -> int:
    if not Path(args.file).exists():
        raise InputError(f"{args.file}: no such accounts file")
    if not remove_account(args.file, args.login):
        raise InputError(f"{normal_login(args.login)}: no such login in {args.file}")
    print(f"removed {normal_login(args.login)} from {args.file}")
    return 0


def cmd_list(args: argparse.Namespace, config: Any = None) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{args.file}: no such accounts file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{args.file}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    accounts = parse_accounts(text, args.file)
    for login in sorted(accounts):
        print(f"{login}\t{'totp' if accounts[login].totp_secret else 'no-totp'}")
    return 0
