"""Helpers for the hardening tests: a scriptable fake upstream speaking SMTP by hand (fault
injection per connection), TLS material made at test time with trustme, and raw-socket clients."""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme

# Faults, one per incoming connection (then "ok"):
#   ok              a healthy ESMTP server (STARTTLS offered when it has a certificate)
#   refuse          not used here: a closed port is the real thing (stop the server)
#   silent          accepts TCP and never says a word (hung upstream)
#   421_greeting    greets with 421 and closes
#   421_mail        answers MAIL FROM with 421 and closes (mid-session shutdown)
#   hang_after_data reads the whole message, never answers the final dot
#   drop_in_data    closes the connection halfway through the message
#   451_data        answers the final dot with 451
#   tls_garbage     offers STARTTLS, says 220, then sends junk instead of a TLS handshake
FAULTS = ("silent", "421_greeting", "421_mail", "hang_after_data", "drop_in_data", "451_data", "tls_garbage")

MID = re.compile(rb"Message-ID: <([^>]+)>")


@dataclass
class Accepted:
    data: bytes
    tls: bool


@dataclass
class FakeUpstream:
    tls_context: ssl.SSLContext | None = None
    faults: list[str] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)  # answered 250 to the final dot
    clear_data: list[bytes] = field(default_factory=list)  # message bytes that crossed without TLS
    connections: int = 0
    port: int = 0
    server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None

    def ids(self) -> list[str]:
        return [m.group(1).decode() for a in self.accepted for m in [MID.search(a.data)] if m]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        fault = self.faults.pop(0) if self.faults else "ok"
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer, fault)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: str) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        if fault == "silent":
            await reader.read()  # until the client gives up
            return
        if fault == "421_greeting":
            await say("421 4.3.2 fake upstream shutting down")
            return
        await say("220 fake.upstream ESMTP")
        tls = False
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                lines = ["fake.upstream", "8BITMIME", "SMTPUTF8", "SIZE 104857600"]
                if (self.tls_context is not None or fault == "tls_garbage") and not tls:
                    lines.append("STARTTLS")
                for i, text in enumerate(lines):
                    await say(("250 " if i == len(lines) - 1 else "250-") + text)
            elif verb == b"HELO":
                await say("250 fake.upstream")
            elif verb == b"STARTTLS":
                await say("220 2.0.0 go ahead")
                if fault == "tls_garbage" or self.tls_context is None:
                    writer.write(b"this is not a TLS handshake\r\n" * 4)
                    await writer.drain()
                    return
                await writer.start_tls(self.tls_context)
                tls = True
            elif verb == b"MAIL":
                if fault == "421_mail":
                    await say("421 4.3.2 fake upstream going down")
                    return
                await say("250 2.1.0 ok")
            elif verb == b"RCPT":
                await say("250 2.1.5 ok")
            elif verb == b"DATA":
                await say("354 go ahead")
                chunks: list[bytes] = []
                while True:
                    chunk = await reader.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    if fault == "drop_in_data" and len(chunks) == 2:
                        return
                data = b"".join(chunks)
                if not tls:
                    self.clear_data.append(data)
                if fault == "hang_after_data":
                    await reader.read()
                    return
                if fault == "451_data":
                    await say("451 4.3.0 fake upstream temporary failure")
                    continue
                self.accepted.append(Accepted(data, tls))
                await say("250 2.0.0 ok queued")
            elif verb in (b"RSET", b"NOOP"):
                await say("250 2.0.0 ok")
            elif verb == b"QUIT":
                await say("221 2.0.0 bye")
                return
            else:
                await say("502 5.5.2 not implemented")


@dataclass(frozen=True)
class TlsFiles:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


def make_tls(tmp: Path, *names: str) -> TlsFiles:
    """A throwaway CA and a leaf certificate for `names` (default 127.0.0.1 and localhost)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
    tmp.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    return TlsFiles(ca, ca_file, cert_file, key_file)


def message(n: int | str, body: str = "hello") -> bytes:
    return (f"From: a@example.jp\r\nTo: b@example.com\r\nSubject: t{n}\r\nMessage-ID: <h{n}@test>\r\n\r\n"
            f"{body}\r\n").encode()


async def read_reply(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, str]:
    """One (possibly multi-line) SMTP reply."""
    lines: list[str] = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("closed: " + " | ".join(lines))
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)
