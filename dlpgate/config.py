"""TOML configuration -> frozen dataclasses.

Every key has a default so the gateway runs with no file at all (`make run`). Unknown keys and
wrong types are errors naming the key: a typo in a DLP policy must never be silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

# Where every command finds the gateway's config when --config is not given: $DLPGATE_CONFIG,
# else this file when it exists, else the embedded defaults. The variable only says where the
# config is; it never says who the caller is (identity comes from the kernel, see control.py).
DEFAULT_CONFIG_PATH = "/etc/dlpgate/dlpgate.toml"
CONFIG_ENV = "DLPGATE_CONFIG"


def find_config(explicit: str | None) -> tuple[str | None, str]:
    """(path or None for the embedded defaults, where that choice came from)."""
    if explicit:
        return explicit, "--config"
    env = os.environ.get(CONFIG_ENV, "")
    if env:
        return env, CONFIG_ENV
    if Path(DEFAULT_CONFIG_PATH).is_file():
        return DEFAULT_CONFIG_PATH, "default path"
    return None, "embedded defaults"


def _default_rules() -> str:
    """The checkout's rules/ (editable install), else the copy installed under <prefix>/share."""
    import sys

    here = REPO_ROOT / "rules"
    if here.is_dir():
        return str(here)
    shared = Path(sys.prefix) / "share" / "dlpgate" / "rules"
    return str(shared if shared.is_dir() else here)


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """'127.0.0.1:10025' / '[::1]:25' -> (host, port)."""
    v = value.strip()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port_s = rest.lstrip(":")
    else:
        host, _, port_s = v.rpartition(":")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}") from None
    if not host or not 0 <= port <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return host, port


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:10025"
    allowed_clients: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_message_bytes: int = 52_428_800
    tls_cert: str = ""
    tls_key: str = ""
    hostname: str = ""  # name in the banner and Received: header; "" = the machine's FQDN
    max_recipients: int = 1000
    max_connections: int = 200
    max_connections_per_client: int = 50
    timeout: float = 300.0  # idle/command timeout (RFC 5321 4.5.3.2 minimum is 5 minutes)
    scan_timeout: float = 120.0  # budget for judging one message before 250; over it: held as unscannable
    auth_users_file: str = ""  # "login:$scrypt$n=..,r=..,p=..$salt$key" lines (`dlpgate auth add`); "" = no AUTH
    allowed_sender_domains: tuple[str, ...] = ()  # MAIL FROM restriction; empty = any
    max_header_count: int = 1000  # header fields per message; more: 552 (hostile or looping mail)
    data_timeout: float = 600.0  # whole DATA phase, first line to final dot (RFC 5321 4.5.3.2.6)


@dataclass(frozen=True)
class RelayConfig:
    upstream: str = "127.0.0.1:10026"
    tls: str = "opportunistic"  # "required" | "opportunistic" | "off"
    tls_verify: bool = True
    tls_ca_file: str = ""
    concurrency: int = 20  # connections to the upstream at once (Postfix: default_destination_concurrency_limit)
    timeout: float = 60.0
    retry_initial: float = 60.0
    retry_max: float = 3600.0
    give_up_after: float = 5 * 24 * 3600.0
    # greet the upstream at start (and every 30 s while it does not answer) to say whether it does
    probe: bool = True


@dataclass(frozen=True)
class DelayConfig:
    seconds: float = 300.0
    # per recipient class; None = `seconds`. The longest class among a message's recipients applies.
    internal: float | None = None
    external: float | None = None
    personal_mail: float | None = None

    def for_class(self, cls: str) -> float:
        v = getattr(self, cls, None)
        return self.seconds if v is None else float(v)


@dataclass(frozen=True)
class StoreConfig:
    path: str = "quarantine"
    retention_days: float = 30.0  # spool files of finished messages
    sendlog_retention_days: float = 366.0
    # "" = the embedded SQLite engine in `path`; "postgresql://user@host/db" = the PostgreSQL engine
    # shared by several gateways (`path` then only holds spool files until their commit)
    url: str = ""
    node: str = ""  # this gateway's name among those sharing the database ("" = the host name); unique
    lease_seconds: float = 30.0  # a dead node's claimed messages go to another node after this long


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9325"  # "" disables the exporter
    # /healthz says "degraded" while the oldest deferred message is older than this (seconds)
    max_deferred_age: float = 3600.0


@dataclass(frozen=True)
class PolicyConfig:
    internal_domains: tuple[str, ...] = ()
    rules: str = field(default_factory=_default_rules)
    first_contact_scope: str = "sender"  # "sender" | "organisation"


@dataclass(frozen=True)
class ApproverRoute:
    senders: tuple[str, ...]
    approvers: tuple[str, ...]
    deputies: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuarantineConfig:
    expire_after: float = 7 * 24 * 3600.0
    expire_action: str = "reject"  # "reject" | "release"
    # with expire_action = "release": also auto-release holds that needed two approvers or could
    # not be scanned (default: those expire unsent, whatever expire_action says)
    expire_release_all: bool = False
    remind_every: float = 24 * 3600.0  # 0 = no reminders
    language: str = "ja"  # "ja" | "en" for notices
    notify: bool = True
    notice_from: str = ""  # envelope/header sender of notices; "" = postmaster@<hostname>
    require_login_binding: bool = False  # true: an approver missing from [approver_logins] may not act


@dataclass(frozen=True)
class ControlConfig:
    """The control API's Unix socket and who is an administrator (issue 14)."""

    socket: str = ""  # "" = <store path>/control.sock (only the service account can reach it there)
    group: str = ""  # Unix group whose members may connect (socket 0660, chgrp); "" = the service account only
    admins: tuple[str, ...] = ()  # OS logins that may list all mail, export the audit log, recall for others
    admin_group: str = ""  # members of this Unix group are administrators too


@dataclass(frozen=True)
class AuditConfig:
    """Where the audit chain's signing key and its witness file live (outside the database)."""

    key: str = ""  # Ed25519 private key (PEM, 0600), created at first start; "" = <store path>/audit.key
    witness: str = ""  # append-only file of signed chain heads; "" = <store path>/audit.witness
    witness_every: float = 60.0  # seconds between witnessed heads (and one on every decision)


@dataclass(frozen=True)
class Person:
    """One `[[people]]` entry: an OS login and the mail addresses that are theirs."""

    login: str
    addresses: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class ExtractConfig:
    max_total_bytes: int = 200 * 1024 * 1024
    max_zip_depth: int = 5
    max_zip_members: int = 10_000
    max_compression_ratio: float = 100.0
    part_seconds: float = 30.0
    max_pdf_pages: int = 500
    max_parts: int = 1000
    worker_memory_mb: int = 4096  # address-space cap of each judging process (0 = none)


@dataclass(frozen=True)
class WebConfig:
    """The browser console (dlpgate/web). Off while `listen` is empty."""

    listen: str = ""  # "127.0.0.1:8443"; plain HTTP only on a loopback address (a reverse proxy in front)
    tls_cert: str = ""
    tls_key: str = ""
    base_url: str = ""  # what notices link to, e.g. "https://dlpgate.example.jp"; "" = no links
    users_file: str = ""  # local accounts: `dlpgate web-user add FILE LOGIN`; "" = trusted proxy only
    require_totp: str = "approvers"  # "approvers" (and admins) | "all" | "none"
    trusted_proxies: tuple[str, ...] = ()  # CIDRs of reverse proxies whose login header is believed
    proxy_login_header: str = "X-Remote-User"
    # accounts of this host whose connections may carry the login header: required when a trusted
    # proxy is on loopback (every local user can connect from 127.0.0.1), checked per connection
    proxy_users: tuple[str, ...] = ()
    session_idle: float = 900.0  # seconds without a request before a session ends
    lockout_after: int = 5  # failed sign-ins of one account before it is locked
    lockout_seconds: float = 900.0
    language: str = "ja"  # "ja" | "en": the default before a user picks one
    notify_delayed: bool = False  # tell senders of mail in its send delay, with a link to recall it


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # "text" | "json"
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    smtp: SmtpConfig = SmtpConfig()
    relay: RelayConfig = RelayConfig()
    delay: DelayConfig = DelayConfig()
    store: StoreConfig = StoreConfig()
    metrics: MetricsConfig = MetricsConfig()
    policy: PolicyConfig = PolicyConfig()
    approvers: tuple[ApproverRoute, ...] = ()
    # approver address -> the OS logins allowed to act as that approver from the CLI
    approver_logins: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # SMTP AUTH login -> the MAIL FROM addresses (or "*@domain", "<>") it may use besides itself
    sender_logins: tuple[tuple[str, tuple[str, ...]], ...] = ()
    quarantine: QuarantineConfig = QuarantineConfig()
    control: ControlConfig = ControlConfig()
    audit: AuditConfig = AuditConfig()
    people: tuple[Person, ...] = ()
    extract: ExtractConfig = ExtractConfig()
    log: LogConfig = LogConfig()
    web: WebConfig = WebConfig()
    source: str = ""  # the file it came from ("" = embedded defaults)

    @property
    def store_path(self) -> Path:
        p = Path(self.store.path)
        if not p.is_absolute() and self.source:
            p = Path(self.source).resolve().parent / p
        return p

    def _beside(self, value: str, default_name: str) -> Path:
        if not value:
            return self.store_path / default_name
        p = Path(value)
        if not p.is_absolute() and self.source:
            p = Path(self.source).resolve().parent / p
        return p

    def beside(self, value: str) -> str:
        """A file named in this config, relative to the config file's directory ("" stays "")."""
        if not value:
            return ""
        p = Path(value)
        if not p.is_absolute() and self.source:
            p = Path(self.source).resolve().parent / p
        return str(p)

    @property
    def control_socket(self) -> Path:
        return self._beside(self.control.socket, "control.sock")

    @property
    def audit_key_path(self) -> Path:
        return self._beside(self.audit.key, "audit.key")

    @property
    def audit_witness_path(self) -> Path:
        return self._beside(self.audit.witness, "audit.witness")

    @property
    def rules_path(self) -> Path:
        p = Path(self.policy.rules)
        if not p.is_absolute() and self.source:
            cand = Path(self.source).resolve().parent / p
            if cand.exists():
                return cand
        if not p.is_absolute() and not p.exists():
            return REPO_ROOT / p
        return p


_SECTIONS: dict[str, type] = {
    "smtp": SmtpConfig,
    "relay": RelayConfig,
    "delay": DelayConfig,
    "store": StoreConfig,
    "metrics": MetricsConfig,
    "policy": PolicyConfig,
    "quarantine": QuarantineConfig,
    "control": ControlConfig,
    "audit": AuditConfig,
    "extract": ExtractConfig,
    "log": LogConfig,
    "web": WebConfig,
}

_CHOICES = {
    "relay.tls": ("required", "opportunistic", "off"),
    "quarantine.expire_action": ("reject", "release"),
    "quarantine.language": ("ja", "en"),
    "log.format": ("text", "json"),
    "policy.first_contact_scope": ("sender", "organisation"),
    "web.require_totp": ("approvers", "all", "none"),
    "web.language": ("ja", "en"),
}


def _coerce(key: str, value: Any, default: Any, annotation: str) -> Any:
    """Check one value against the type of its default; name the key on mismatch."""
    if "tuple" in annotation:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings")
        return tuple(value)
    if "float" in annotation:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if value < 0:
            raise ConfigError(f"{key}: must not be negative")
        return float(value)
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{key}: must not be negative")
        return value
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{key}: must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover


def _section(name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}]: expected a table")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in known:
            raise ConfigError(f"{name}.{k}: unknown key")
        f = known[k]
        kwargs[k] = _coerce(f"{name}.{k}", v, None, str(f.type))
    return cls(**kwargs)


def _approvers(data: Any) -> tuple[ApproverRoute, ...]:
    if not isinstance(data, list):
        raise ConfigError("approvers: expected [[approvers]] tables")
    routes = []
    for i, item in enumerate(data):
        key = f"approvers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table")
        for k in item:
            if k not in ("senders", "approvers", "deputies"):
                raise ConfigError(f"{key}.{k}: unknown key")
        for k in ("senders", "approvers"):
            if k not in item:
                raise ConfigError(f"{key}.{k}: missing")
        vals = {k: _coerce(f"{key}.{k}", item.get(k, []), None, "tuple") for k in ("senders", "approvers", "deputies")}
        routes.append(ApproverRoute(**{k: tuple(s.lower() for s in v) for k, v in vals.items()}))
    return tuple(routes)


def _approver_logins(data: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(data, dict):
        raise ConfigError("approver_logins: expected a table of \"address\" = [\"login\", ...]")
    out = []
    for addr, logins in data.items():
        if "@" not in addr:
            raise ConfigError(f"approver_logins.{addr}: expected an approver's email address")
        out.append((addr.lower(), _coerce(f"approver_logins.{addr}", logins, None, "tuple")))
    return tuple(out)


def _sender_logins(data: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(data, dict):
        raise ConfigError("sender_logins: expected a table of \"login\" = [\"address\", \"*@domain\", ...]")
    out = []
    for login, senders in data.items():
        vals = _coerce(f"sender_logins.{login}", senders, None, "tuple")
        for v in vals:
            if v != "<>" and ("@" not in v or v.count("@") != 1 or any(c.isspace() for c in v)):
                raise ConfigError(f"sender_logins.{login}: {v!r} is not an address, \"*@domain\" or \"<>\"")
        out.append((login.lower(), tuple(v.lower() for v in vals)))
    return tuple(out)


def _people(data: Any) -> tuple[Person, ...]:
    if not isinstance(data, list):
        raise ConfigError("people: expected [[people]] tables")
    out: list[Person] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        key = f"people[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table")
        for k in item:
            if k not in ("login", "addresses", "name"):
                raise ConfigError(f"{key}.{k}: unknown key")
        login = item.get("login")
        if not isinstance(login, str) or not login.strip() or any(c.isspace() for c in login):
            raise ConfigError(f"{key}.login: expected an OS login name")
        if login in seen:
            raise ConfigError(f"{key}.login: {login!r} is listed twice")
        seen.add(login)
        addrs = _coerce(f"{key}.addresses", item.get("addresses", []), None, "tuple")
        for a in addrs:
            if "@" not in a:
                raise ConfigError(f"{key}.addresses: {a!r} is not an email address")
        name = _coerce(f"{key}.name", item.get("name", ""), None, "str")
        out.append(Person(login, tuple(dict.fromkeys(a.strip().lower() for a in addrs)), name))
    return tuple(out)


def _validate(cfg: Config) -> None:
    parse_hostport(cfg.smtp.listen, "smtp.listen")
    parse_hostport(cfg.relay.upstream, "relay.upstream")
    if cfg.metrics.listen:
        parse_hostport(cfg.metrics.listen, "metrics.listen")
    for i, net in enumerate(cfg.smtp.allowed_clients):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"smtp.allowed_clients[{i}]: not a CIDR network: {net!r}") from None
    if cfg.smtp.auth_users_file and not (cfg.smtp.tls_cert and cfg.smtp.tls_key):
        raise ConfigError("smtp.auth_users_file: AUTH is offered only after STARTTLS; set smtp.tls_cert and"
                          " smtp.tls_key too")
    if bool(cfg.smtp.tls_cert) != bool(cfg.smtp.tls_key):
        raise ConfigError("smtp.tls_cert: tls_cert and tls_key must be set together")
    if cfg.relay.concurrency < 1:
        raise ConfigError("relay.concurrency: must be at least 1")
    _validate_web(cfg.web)


def _validate_web(web: WebConfig) -> None:
    """The console's listener: TLS off loopback, someone able to sign in, links that are URLs."""
    for i, net in enumerate(web.trusted_proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"web.trusted_proxies[{i}]: not a CIDR network: {net!r}") from None
    for i, name in enumerate(web.proxy_users):
        if account_uid(name) is None:
            raise ConfigError(f"web.proxy_users[{i}]: no account {name!r} on this host")
    local = [n for n in web.trusted_proxies if _covers_loopback(n)]
    if local and not web.proxy_users:
        raise ConfigError(f"web.proxy_users: web.trusted_proxies names this host ({local[0]}): every local account can"
                          f" connect from it and send {web.proxy_login_header}; list the proxy's account(s) in"
                          " web.proxy_users (only their connections are believed)")
    if bool(web.tls_cert) != bool(web.tls_key):
        raise ConfigError("web.tls_cert: tls_cert and tls_key must be set together")
    if web.base_url and not web.base_url.startswith(("https://", "http://")):
        raise ConfigError(f"web.base_url: expected an https:// URL, got {web.base_url!r}")
    if not web.proxy_login_header.strip() or not all(c.isalnum() or c == "-" for c in web.proxy_login_header):
        raise ConfigError("web.proxy_login_header: expected a header name like X-Remote-User")
    if web.notify_delayed and not web.base_url:
        raise ConfigError("web.notify_delayed: needs web.base_url (the notice links to the console)")
    if not web.listen:
        return
    host, _ = parse_hostport(web.listen, "web.listen")
    if not web.tls_cert and not _is_loopback(host):
        raise ConfigError(f"web.listen: plain HTTP is allowed only on a loopback address, not {host};"
                          " set web.tls_cert and web.tls_key")
    if not web.users_file and not web.trusted_proxies:
        raise ConfigError("web.users_file: nobody could sign in; set web.users_file (dlpgate web-user add)"
                          " or web.trusted_proxies")
    if web.session_idle < 60:
        raise ConfigError("web.session_idle: at least 60 seconds")
    if web.lockout_after < 1:
        raise ConfigError("web.lockout_after: at least 1")


def account_uid(name: str) -> int | None:
    """The uid of an account named by login or number, None when this host has no such account."""
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        pass
    if name.isdigit():
        try:
            return pwd.getpwuid(int(name)).pw_uid
        except KeyError:
            return None
    return None


def _covers_loopback(net: str) -> bool:
    """Whether a CIDR holds loopback addresses (127.0.0.0/8, ::1): connections from this host."""
    n = ipaddress.ip_network(net, strict=False)
    if isinstance(n, ipaddress.IPv4Network):
        return n.overlaps(ipaddress.IPv4Network("127.0.0.0/8"))
    return ipaddress.IPv6Address("::1") in n


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load a TOML file (or the embedded defaults when path is None)."""
    if path is None:
        cfg = Config()
        _validate(cfg)
        return cfg
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    kwargs: dict[str, Any] = {"source": str(p)}
    for name, value in raw.items():
        if name in _SECTIONS:
            kwargs[name] = _section(name, _SECTIONS[name], value)
        elif name == "approvers":
            kwargs["approvers"] = _approvers(value)
        elif name == "approver_logins":
            kwargs["approver_logins"] = _approver_logins(value)
        elif name == "sender_logins":
            kwargs["sender_logins"] = _sender_logins(value)
        elif name == "people":
            kwargs["people"] = _people(value)
        else:
            raise ConfigError(f"{name}: unknown section")
    cfg = Config(**kwargs)
    _validate(cfg)
    return cfg


def with_overrides(cfg: Config, **sections: Any) -> Config:
    """Return a copy with whole sections replaced (tests and benchmarks use it)."""
    return replace(cfg, **sections)
