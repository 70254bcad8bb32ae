"""The CLI side of the control API: one JSON line out, one back (contract: COMMON.md / DESIGN.md).

The client never names its caller: the gateway reads the uid from the kernel. It never touches
the store either: with the gateway down, people get one line (`Unavailable`, exit 2), never a
direct write. Typed errors come back as the same dlpgate.errors types.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import errors
from .config import Config
from .errors import DlpgateError, Unavailable

TIMEOUT = 120.0  # a decision waits for its group commit; a loaded gateway still answers well within this
_TYPES: dict[str, type[DlpgateError]] = {
    "PermissionDenied": errors.PermissionDenied, "NotFound": errors.NotFound, "InputError": errors.InputError,
    "StateError": errors.StateError, "StoreError": errors.StoreError, "DlpgateError": DlpgateError,
}


SUN_PATH_MAX = 107  # bytes of a Unix socket path the kernel takes (sun_path, NUL excluded)


@contextlib.contextmanager
def reachable(path: str | Path) -> Iterator[str]:
    """A name bind()/connect() accept for `path`, however deep: a long one goes through its
    directory's descriptor (/proc/self/fd/N/name, which the kernel resolves), kept open meanwhile."""
    p = str(path)
    if len(os.fsencode(p)) <= SUN_PATH_MAX:
        yield p
        return
    parent, name = os.path.split(p)
    fd = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def socket_path(config: Config) -> Path:
    """Where the gateway of this config listens (`[control] socket`, else `<store>/control.sock`)."""
    return config.control_socket


def call(path: str | Path, op: str, args: dict[str, Any] | None = None, *, timeout: float = TIMEOUT) -> Any:
    """Run one operation on the gateway listening at `path`; its result or the typed error."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            with reachable(path) as name:
                s.connect(name)
        except FileNotFoundError:
            raise Unavailable(f"the gateway is not running (no control socket at {path});"
                              " nothing was changed") from None
        except ConnectionRefusedError:
            raise Unavailable(f"the gateway is not running (control socket {path} refused the connection);"
                              " nothing was changed") from None
        except PermissionError:
            raise Unavailable(f"you may not connect to the gateway's control socket {path}"
                              " (ask to be added to its [control] group)") from None
        except OSError as e:
            raise Unavailable(f"cannot reach the gateway at {path}: {e.strerror or e}") from None
        s.sendall((json.dumps({"op": op, "args": args or {}}, ensure_ascii=False) + "\n").encode("utf-8"))
        buf = bytearray()
        while not buf.endswith(b"\n"):
            try:
                chunk = s.recv(1 << 16)
            except TimeoutError:
                raise Unavailable(f"the gateway did not answer within {timeout:.0f} s") from None
            except OSError as e:
                raise Unavailable(f"the gateway closed the connection: {e.strerror or e}") from None
            if not chunk:
                raise Unavailable("the gateway closed the connection without an answer")
            buf += chunk
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise Unavailable("the gateway's answer was not JSON") from None
    if reply.get("ok"):
        return reply.get("result")
    err = reply.get("error") or {}
    raise _TYPES.get(str(err.get("type")), DlpgateError)(str(err.get("message") or "refused"))
