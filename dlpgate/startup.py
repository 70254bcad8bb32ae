"""What `serve` checks before it creates anything, and what it says when it starts.

A newcomer's first questions are "where does my mail go?" and "why does nothing happen?". So
before the store directory, the lock file or a worker exists, every file the gateway needs is
checked (rules, users file, TLS key pair, where the store will live) and a problem is one
ConfigError naming the key and what to do; `dlpgate config check` runs the same checks. At start
the gateway then logs where mail goes, the delay, the store, the rules and approver routes it
loaded, and warnings for set-ups that lose no mail but surprise people: no approver at all (held
mail waits until it expires), own domains no route covers, an upstream that does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config, parse_hostport
from .errors import ConfigError, DlpgateError

log = logging.getLogger("dlpgate.server")

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Summary:
    """What a config amounts to, in numbers a person can check against their intent."""

    upstream: str
    tls: str
    delay: str
    store: str
    rules_dir: str
    policy_rules: int
    keywords: int
    label_groups: int
    personal_mail_domains: int
    approver_routes: int
    approvers: int
    warnings: tuple[str, ...]

    def lines(self) -> list[str]:
        return [
            f"mail goes to {self.upstream} (upstream TLS: {self.tls})",
            f"send delay: {self.delay}",
            f"store: {self.store}",
            f"rules from {self.rules_dir}: {self.policy_rules} policy rules, {self.keywords} detector keywords,"
            f" {self.label_groups} label groups, {self.personal_mail_domains} personal-mail domains",
            f"approver routes: {self.approver_routes} ({self.approvers} approvers and deputies)",
        ]


def _delay_text(cfg: Config) -> str:
    d = cfg.delay
    text = f"{d.seconds:g} s"
    per = [f"{k} {v:g} s" for k in ("internal", "external", "personal_mail")
           if (v := getattr(d, k)) is not None]
    return text + (f" ({', '.join(per)})" if per else "")


def _check_rules(cfg: Config) -> tuple[int, int, int, int]:
    from .policy import Policy
    from .scan.rules import load_detector_rules

    d = cfg.rules_path
    if not d.is_dir():
        raise ConfigError(f"policy.rules: rules directory {d} does not exist (copy the shipped rules/ there:"
                          f" cp -r rules {d}; see deploy/README.md)")
    rules = load_detector_rules(d)  # RuleError names the file and key
    policy = Policy.load(d, cfg.policy.internal_domains)
    keywords = sum(len(getattr(rules, k)) for k in ("my_number_keywords", "resident_keywords",
                                                     "card_keywords", "licence_keywords"))
    return len(policy.rules), keywords, len(rules.labels), len(policy.personal)


def _check_store(cfg: Config) -> None:
    """The store directory exists and is writable, or can be created by this user."""
    root = cfg.store_path
    if root.exists():
        if not root.is_dir():
            raise ConfigError(f"store.path: {root} is not a directory")
        if not os.access(root, os.W_OK | os.X_OK):
            raise ConfigError(f"store.path: {root} is not writable by uid {os.getuid()}"
                              " (run as the service user, e.g. sudo -u dlpgate)")
        return
    parent = root.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"store.path: {root} does not exist and uid {os.getuid()} cannot create it in {parent}"
                          " (systemd's StateDirectory= creates /var/lib/dlpgate; by hand:"
                          " install -d -o dlpgate -m 0700 DIR, or set [store] path to a directory you own)")


def _check_tls(cfg: Config) -> None:
    s = cfg.smtp
    if not (s.tls_cert and s.tls_key):
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(s.tls_cert, s.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"smtp.tls_cert: cannot load {s.tls_cert} / {s.tls_key}:"
                          f" {getattr(e, 'strerror', None) or e}") from None
    if cfg.relay.tls_ca_file and not Path(cfg.relay.tls_ca_file).is_file():
        raise ConfigError(f"relay.tls_ca_file: {cfg.relay.tls_ca_file}: no such file")


def warnings(cfg: Config) -> list[str]:
    """Set-ups that lose no mail but surprise: said at start and by `config check`."""
    out: list[str] = []
    if not cfg.approvers:
        out.append("no [[approvers]] routes: nobody can release held mail; it waits until it expires"
                   f" ({cfg.quarantine.expire_after:g} s, then {cfg.quarantine.expire_action})")
    else:
        from .approvals import sender_matches

        for dom in dict.fromkeys(cfg.policy.internal_domains + cfg.smtp.allowed_sender_domains):
            probe = f"someone@{dom.lower()}"
            if not any(sender_matches(p, probe) for r in cfg.approvers for p in r.senders):
                out.append(f"senders at {dom} match no [[approvers]] route: nobody can release their held mail")
        for i, r in enumerate(cfg.approvers):
            if not r.approvers and not r.deputies:
                out.append(f"approvers[{i}] names nobody who may decide")
    from .identities import binding_problems

    out += binding_problems(cfg)  # approver addresses no login is bound to act for nobody (fail closed)
    if cfg.relay.tls == "off":
        host, _ = parse_hostport(cfg.relay.upstream, "relay.upstream")
        if host not in ("127.0.0.1", "::1", "localhost"):
            out.append(f"relay.tls = \"off\": mail to {cfg.relay.upstream} crosses the network in clear")
    return out


def preflight(cfg: Config) -> Summary:
    """Check everything `serve` needs, creating nothing. Every problem found is named in one
    ConfigError (key or file, and what to do), so a fresh host learns all it lacks at once."""
    from .auth import FileAuthenticator

    problems: list[str] = []
    counts = (0, 0, 0, 0)
    try:
        counts = _check_rules(cfg)
    except DlpgateError as e:
        problems.append(str(e))
    from .control import preflight as _check_control

    checks: list[Callable[[Config], object]] = [_check_tls, _check_store, _check_control]
    if cfg.smtp.auth_users_file:  # a broken users file stops start-up naming the line, not locks all out
        checks.insert(0, lambda c: FileAuthenticator(c.smtp.auth_users_file).users())
    for check in checks:
        try:
            check(cfg)
        except DlpgateError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("; ".join(problems))
    people = {a for r in cfg.approvers for a in (*r.approvers, *r.deputies)}
    return Summary(upstream=cfg.relay.upstream, tls=cfg.relay.tls, delay=_delay_text(cfg),
                   store=os.path.abspath(cfg.store_path), rules_dir=str(cfg.rules_path), policy_rules=counts[0],
                   keywords=counts[1], label_groups=counts[2], personal_mail_domains=counts[3],
                   approver_routes=len(cfg.approvers), approvers=len(people), warnings=tuple(warnings(cfg)))


async def probe_upstream(upstream: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when the upstream greets with 220 (then QUIT); otherwise why not, in a few words."""
    host, port = parse_hostport(upstream, "relay.upstream")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as e:
        errno_ = e.errno if isinstance(e, OSError) else None
        return f"cannot connect: {os.strerror(errno_) if errno_ else type(e).__name__}"
    try:
        line = b""
        while True:  # the greeting may be multi-line: 220-... then 220 ...
            line = await asyncio.wait_for(reader.readline(), timeout)
            if len(line) < 4 or line[3:4] != b"-":
                break
        if not line.startswith(b"220"):
            return f"no SMTP greeting (got {line[:40].decode('latin-1', 'replace').strip()!r})"
        writer.write(b"QUIT\r\n")
        await asyncio.wait_for(writer.drain(), timeout)
        return None
    except (OSError, TimeoutError) as e:
        return f"no SMTP greeting ({type(e).__name__})"
    finally:
        writer.close()


def log_started(cfg: Config, summary: Summary, smtp_listen: str, metrics_listen: str) -> None:
    log.info("listening on %s%s", smtp_listen, f", metrics on {metrics_listen}" if metrics_listen else "",
             extra={"event": "started", "config": cfg.source or "embedded defaults"})
    for line in summary.lines():
        log.info("%s", line, extra={"event": "config"})
    for w in summary.warnings:
        log.warning("%s", w, extra={"event": "config_warning"})

