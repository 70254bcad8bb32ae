"""Which account a connection to the console comes from, when it comes from this host.

A reverse proxy's login header is believed by the proxy's address (`[web] trusted_proxies`). On
this host that address proves nothing: every local account can connect from 127.0.0.1 (or any
loopback or local address) and send `X-Remote-User: kacho`. The kernel knows better: the
connecting socket is in this host's socket table (`/proc/net/tcp`, `/proc/net/tcp6`) with the uid
that opened it, so a local connection is believed only from `[web] proxy_users`.
"""

from __future__ import annotations

import ipaddress
import sys

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _hex_endpoint(host: str, port: int) -> tuple[str, str]:
    """(address, port) as the kernel's socket table writes them: 32-bit words in host byte order."""
    addr = ipaddress.ip_address(host)
    packed = addr.packed
    words = [packed[i:i + 4] for i in range(0, len(packed), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return b"".join(words).hex().upper(), f"{port:04X}"


def _forms(host: str, port: int) -> set[str]:
    """An endpoint as it may appear: itself, and an IPv4 address as IPv4-mapped IPv6 (dual stack)."""
    out = {":".join(_hex_endpoint(host, port))}
    addr = ipaddress.ip_address(host)
    if isinstance(addr, ipaddress.IPv4Address):
        out.add(":".join(_hex_endpoint(f"::ffff:{addr}", port)))
    elif addr.ipv4_mapped is not None:
        out.add(":".join(_hex_endpoint(str(addr.ipv4_mapped), port)))
    return out


def local_peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the client end of the connection client -> server when that end is a socket
    of this host (the kernel's socket table), else None (a remote peer, or no table to read)."""
    try:
        mine, theirs = _forms(*client), _forms(*server)
    except ValueError:
        return None
    for table in _TABLES:
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)  # the column titles
                for line in f:
                    cols = line.split()
                    if len(cols) > 7 and cols[1] in mine and cols[2] in theirs:
                        return int(cols[7])
        except OSError:
            continue
    return None


def table_readable() -> bool:
    """Whether this host has a socket table to read (Linux): without one no local connection can
    be told from another, and a loopback proxy's header is never believed."""
    try:
        with open(_TABLES[0], encoding="ascii"):
            return True
    except OSError:
        return False


__all__ = ["local_peer_uid", "table_readable"]
