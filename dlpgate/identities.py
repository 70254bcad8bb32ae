"""People: who is who, by OS login (issue 14).

The gateway's own config is the only source: `[[people]]` binds a login to the addresses that are
that person's (sender addresses and approver addresses alike), `[control] admins` / `admin_group`
name the administrators. A login arrives from the kernel (SO_PEERCRED on the control socket) or
from the web console's sign-in; nothing a client sends may name it.

An approver address acts only through a login bound to it: an address nobody is bound to can
approve nothing (fail closed). The old `[approver_logins]` table ("address" = ["login", ...]) is
read as `[[people]]` entries, with one log line saying so.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .config import Config, Person

log = logging.getLogger("dlpgate.identities")

ADMIN = "admin"
APPROVER = "approver"
DEPUTY = "deputy"
SENDER = "sender"


@dataclass(frozen=True)
class Identity:
    """One caller as the gateway sees them: login, their addresses and roles."""

    login: str
    name: str
    addresses: tuple[str, ...]
    admin: bool
    known: bool  # in [[people]] or an administrator

    def owns(self, address: str) -> bool:
        """Whether `address` is one of this person's mailboxes, however it is spelled: case, a
        quoted local part, an address extension (`tanaka+x@`, which mail servers deliver to and
        accept from tanaka's own login) name the same mailbox. Without this, a supervisor who also
        sends as a member of the department approved his own mail sent as `tanaka+x@`."""
        box = mailbox(address)
        return any(mailbox(a) == box for a in self.addresses)


def mailbox(address: str) -> str:
    """The mailbox an address names: lower case, unquoted local part, no `+extension`."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return domain
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = local[1:-1]
    return local.partition("+")[0] + "@" + domain


def _merge(people: Sequence[Person], legacy: Iterable[tuple[str, Sequence[str]]]) -> tuple[Person, ...]:
    by_login: dict[str, Person] = {p.login: p for p in people}
    for addr, logins in legacy:
        for login in logins:
            p = by_login.get(login, Person(login))
            if addr not in p.addresses:
                p = Person(p.login, (*p.addresses, addr), p.name)
            by_login[login] = p
    return tuple(by_login.values())


class Identities:
    """The people table of one config. Cheap to build; rebuilt on reload."""

    def __init__(self, config: Config, *, service_uid: int | None = None) -> None:
        self.config = config
        self.people = _merge(config.people, config.approver_logins)
        self._by_login = {p.login: p for p in self.people}
        self.service_uid = os.getuid() if service_uid is None else service_uid

    # ---- who is who
    def is_admin(self, login: str, uid: int | None = None) -> bool:
        """Listed in [control] admins, a member of [control] admin_group, root, or the service account."""
        if uid is not None and uid in (0, self.service_uid):
            return True
        c = self.config.control
        if login in c.admins:
            return True
        if c.admin_group:
            try:
                g = grp.getgrnam(c.admin_group)
            except KeyError:
                return False
            if login in g.gr_mem:
                return True
            try:
                return pwd.getpwnam(login).pw_gid == g.gr_gid
            except KeyError:
                return False
        return False

    def identity(self, login: str, uid: int | None = None) -> Identity:
        p = self._by_login.get(login)
        admin = self.is_admin(login, uid)
        if p is None:
            return Identity(login, "", (), admin, admin)
        return Identity(login, p.name, p.addresses, admin, True)

    def logins_for(self, address: str) -> tuple[str, ...]:
        a = address.strip().lower()
        return tuple(p.login for p in self.people if a in p.addresses)

    def people_for(self, address: str) -> tuple[Person, ...]:
        a = address.strip().lower()
        return tuple(p for p in self.people if a in p.addresses)

    # ---- what the config says about bindings
    def approver_addresses(self) -> tuple[str, ...]:
        out: list[str] = []
        for r in self.config.approvers:
            out += [a for a in (*r.approvers, *r.deputies) if a not in out]
        return tuple(out)

    def unbound_approvers(self) -> tuple[str, ...]:
        return tuple(a for a in self.approver_addresses() if not self.logins_for(a))


def binding_problems(config: Config) -> list[str]:
    """One line per problem `serve` and `rules check` report about who may approve."""
    ids = Identities(config)
    out: list[str] = []
    if config.approver_logins:
        out.append("[approver_logins] is read as [[people]] entries ("
                   + ", ".join(sorted({login for _, ls in config.approver_logins for login in ls}))
                   + "); move them to [[people]] login/addresses")
    approvers = ids.approver_addresses()
    unbound = ids.unbound_approvers()
    if approvers and len(unbound) == len(approvers):
        out.append("no approver address is bound to a login in [[people]]: nobody can approve held mail"
                   " (fail closed)")
    elif unbound:
        out.append("approver addresses without a login in [[people]] cannot approve: " + ", ".join(unbound))
    return out


def log_binding_problems(config: Config) -> None:
    for line in binding_problems(config):
        log.warning("%s", line, extra={"event": "identities"})
