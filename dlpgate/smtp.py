"""SMTP listener: aiosmtpd protocol, thin; the policy lives in `Handler` (handle_* coroutines).

The handler only checks who may talk to us and hands complete messages to the pipeline, which
answers 250 only once the message is durably stored.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections import Counter
from typing import Any

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from . import metrics
from .config import Config
from .pipeline import Envelope, Pipeline

log = logging.getLogger("dlpgate.smtp")


class Handler:
    def __init__(self, config: Config, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.networks = [ipaddress.ip_network(n, strict=False) for n in config.smtp.allowed_clients]
        self.accepting = True
        self.sessions: Counter[str] = Counter()
        self.total = 0

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new limits and allow-list apply to new connections and commands."""
        self.config = config
        self.networks = [ipaddress.ip_network(n, strict=False) for n in config.smtp.allowed_clients]

    def client_allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self.networks)

    def connection_refusal(self, host: str) -> str | None:
        """The reply refusing a new connection, or None to serve it."""
        if not self.accepting:
            metrics.REFUSED.labels(reason="shutting_down").inc()
            return "421 4.3.2 Service shutting down, try again later"
        if not self.client_allowed(host):
            metrics.REFUSED.labels(reason="client_not_allowed").inc()
            log.warning("client refused", extra={"event": "client_refused"})
            return "554 5.7.1 Relaying denied: client not allowed"
        if self.total >= self.config.smtp.max_connections:
            metrics.REFUSED.labels(reason="too_many_connections").inc()
            return "421 4.7.0 Too many connections, try again later"
        if self.sessions[host] >= self.config.smtp.max_connections_per_client:
            metrics.REFUSED.labels(reason="too_many_from_client").inc()
            return "421 4.7.0 Too many connections from your address, try again later"
        return None

    def opened(self, host: str) -> None:
        self.sessions[host] += 1
        self.total += 1
        metrics.SESSIONS.set(self.total)

    def closed(self, host: str) -> None:
        self.sessions[host] -= 1
        if self.sessions[host] <= 0:
            del self.sessions[host]
        self.total -= 1
        metrics.SESSIONS.set(self.total)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands one by one, so pipelined clients are served correctly
        return responses[:-1] + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          mail_options: list[str]) -> str:
        allowed = self.config.smtp.allowed_sender_domains
        if allowed and address and address != "<>":
            dom = address.rpartition("@")[2].lower()
            if dom not in {d.lower() for d in allowed}:
                metrics.REFUSED.labels(reason="sender_domain").inc()
                return "553 5.7.1 Sender address not allowed here"
        if self.config.smtp.auth_users_file and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            metrics.REFUSED.labels(reason="too_many_recipients").inc()
            return "452 4.5.3 Too many recipients"
        if "@" not in address:
            return "501 5.1.3 Recipient address must be a full address"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(data, str):  # decode_data is off; this is defensive only
            data = data.encode("utf-8", "surrogateescape")
        assert isinstance(data, bytes)
        if len(data) > self.config.smtp.max_message_bytes:
            metrics.RECEIVED.labels(result="too_big").inc()
            return "552 5.3.4 Message too big"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        sender = envelope.mail_from or ""
        if sender == "<>":  # aiosmtpd keeps the null reverse-path as "<>"
            sender = ""
        env = Envelope(sender=sender, recipients=tuple(envelope.rcpt_tos), client=peer,
                       helo=session.host_name or "")
        reply = await self.pipeline.receive(env, data)
        return str(reply)


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol plus a connection gate (allow-list, limits) before the banner."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._gate = handler
        self._counted: str | None = None

    async def _handle_client(self) -> None:
        assert self.session is not None
        peer = self.session.peer
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        refusal = self._gate.connection_refusal(host)
        if refusal is not None:
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        self._gate.opened(host)
        self._counted = host
        try:
            await super()._handle_client()
        finally:
            self._gate.closed(host)
            self._counted = None


def tls_context(config: Config) -> ssl.SSLContext | None:
    if not (config.smtp.tls_cert and config.smtp.tls_key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.smtp.tls_cert, config.smtp.tls_key)
    return ctx
