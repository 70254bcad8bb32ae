"""The audit chain's anchor: an Ed25519 key the database does not hold, and the witness file.

Why a signature and not only a hash chain: whoever can write the database can recompute an
unkeyed chain. Each append to the chain ends with an entry whose (seq, hash) is signed with the
gateway's private key (a file only the service account reads, created at first start, 0600); the
chain links make that one signature cover every entry before it. An auditor verifies with the
public key alone (`<key>.pub`, fingerprint printed by `audit verify`).

Why a witness: signatures do not stop someone cutting off the newest entries. The gateway
appends its chain head (seq, hash, time, signature) to a file outside the store at least every
minute and on every decision, and logs the same line; `audit verify` then requires every
witnessed head to still be in the database, unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigError, InputError

_ENTRY = b"dlpgate-audit-v1\0"
_WITNESS = b"dlpgate-witness-v1\0"


def fingerprint(pub: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, first 16 hex digits in groups of four ("ab12:cd34:...")."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    h = hashlib.sha256(raw).hexdigest()
    return ":".join(h[i:i + 4] for i in range(0, 16, 4))


def _entry_message(seq: int, h: str) -> bytes:
    return _ENTRY + f"{seq}:{h}".encode("ascii")


def _witness_message(seq: int, h: str, ts: float) -> bytes:
    return _WITNESS + f"{seq}:{h}:{ts!r}".encode("ascii")


class PublicKey:
    """Verifies entry and witness signatures; what an auditor holds."""

    def __init__(self, pub: Ed25519PublicKey) -> None:
        self.pub = pub
        self.fingerprint = fingerprint(pub)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> PublicKey:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise InputError(f"cannot read public key {path}: {e.strerror}") from None
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise InputError(f"{path}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InputError(f"{path}: not an Ed25519 public key")
        return PublicKey(key)

    def pem(self) -> bytes:
        return self.pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _check(self, sig: str, message: bytes) -> str:
        """"" when `sig` verifies, else why not."""
        fp, _, b64 = sig.rpartition(":")
        if fp != self.fingerprint:
            return f"signed with key {fp or '?'}, not {self.fingerprint}"
        try:
            self.pub.verify(base64.b64decode(b64, validate=True), message)
        except (InvalidSignature, ValueError):
            return "signature does not verify"
        return ""

    def check_entry(self, seq: int, h: str, sig: str) -> str:
        return self._check(sig, _entry_message(seq, h))

    def check_witness(self, seq: int, h: str, ts: float, sig: str) -> str:
        return self._check(sig, _witness_message(seq, h, ts))


class AuditKey(PublicKey):
    """The gateway's signing key."""

    def __init__(self, priv: Ed25519PrivateKey, path: Path) -> None:
        super().__init__(priv.public_key())
        self._priv = priv
        self.path = path

    @staticmethod
    def load_or_create(path: str | os.PathLike[str]) -> tuple[AuditKey, bool]:
        """The key at `path`, created (0600, O_EXCL) when missing; also writes `<path>.pub`.
        Returns (key, created)."""
        p = Path(path)
        created = False
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            priv = Ed25519PrivateKey.generate()
            pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it meanwhile: use theirs
                data = p.read_bytes()
            except OSError as e:
                raise ConfigError(f"audit.key: cannot create {p}: {e.strerror}") from None
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                data, created = pem, True
        except OSError as e:
            raise ConfigError(f"audit.key: cannot read {p}: {e.strerror}") from None
        st = p.stat()
        if st.st_mode & 0o077:
            raise ConfigError(f"audit.key: {p} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"audit.key: {p} is not an unencrypted PEM private key") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ConfigError(f"audit.key: {p} is not an Ed25519 key")
        key = AuditKey(loaded, p)
        pub = p.with_name(p.name + ".pub")
        with contextlib.suppress(OSError):
            if not pub.exists() or pub.read_bytes() != key.pem():
                tmp = pub.with_name(pub.name + ".tmp")
                tmp.write_bytes(key.pem())
                os.chmod(tmp, 0o600)  # public, but it lives among the service's files: `dlpgate audit key` hands it out
                os.replace(tmp, pub)
        return key, created

    def sign(self, seq: int, h: str) -> str:
        """Signature text stored with an entry: "<fingerprint>:<base64>"."""
        return f"{self.fingerprint}:{base64.b64encode(self._priv.sign(_entry_message(seq, h))).decode('ascii')}"

    def sign_witness(self, seq: int, h: str, ts: float) -> str:
        s = self._priv.sign(_witness_message(seq, h, ts))
        return f"{self.fingerprint}:{base64.b64encode(s).decode('ascii')}"


@dataclass(frozen=True)
class WitnessedHead:
    line: int
    seq: int
    hash: str
    ts: float
    sig: str


def witness_line(key: AuditKey, seq: int, h: str, ts: float) -> dict[str, Any]:
    return {"seq": seq, "hash": h, "ts": ts, "sig": key.sign_witness(seq, h, ts)}


def append_witness(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (O_APPEND, fsync'd). The file may be chattr +a or on another disk."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_witness(path: Path) -> tuple[list[WitnessedHead], list[str]]:
    """The heads in the witness file, and one message per unreadable line."""
    heads: list[WitnessedHead] = []
    bad: list[str] = []
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            heads.append(WitnessedHead(n, int(d["seq"]), str(d["hash"]), float(d["ts"]), str(d["sig"])))
        except (ValueError, KeyError, TypeError):
            bad.append(f"witness line {n} is unreadable")
    return heads, bad


def signer_for(config: Any) -> Any:
    """The signing function a store of this config appends with (the gateway and its deliverer)."""
    key, _ = AuditKey.load_or_create(config.audit_key_path)
    return key.sign
