"""Helpers for the approval / audit / outbox / admin CLI tests (no tests of its own).

All identifiers are synthetic: generated My Numbers with a valid check digit from fixed seeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

from dlpgate.approvals import Notices
from dlpgate.cli import main
from dlpgate.config import Config, load_config
from dlpgate.masking import mask_number
from dlpgate.store import HELD, NewMessage, Store, new_id

WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def my_number(first11: str) -> str:
    """11 digits + the My Number check digit."""
    r = sum(int(d) * w for d, w in zip(first11, WEIGHTS, strict=True)) % 11
    return first11 + str(0 if r <= 1 else 11 - r)


def synthetic_numbers(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return [my_number("".join(str(rnd.randrange(10)) for _ in range(11))) for _ in range(n)]


PEOPLE = {"kacho-login": "kacho@example.jp", "bucho-login": "bucho@example.jp", "dairi-login": "dairi@example.jp",
          "tanaka-login": "tanaka@soumu.example.jp", "sato-login": "sato@zeimu.example.jp"}


def people_toml(people: dict[str, str | Sequence[str]]) -> str:
    out = []
    for login, addrs in people.items():
        lst = [addrs] if isinstance(addrs, str) else list(addrs)
        out.append(f'[[people]]\nlogin = "{login}"\naddresses = [{", ".join(repr(a).replace(chr(39), chr(34)) for a in lst)}]\n')
    return "\n".join(out)


def config_toml(tmp_path: Path, *, language: str = "en", extra: str = "", upstream_port: int = 10026,
                people: dict[str, str | Sequence[str]] | None = None, tail: str = "") -> Path:
    """A config file the gateway reads: its store, two routes, a deputy, and who is who
    ([[people]]: one login per address unless `people` says otherwise)."""
    p = tmp_path / "dlpgate.toml"
    p.write_text(f"""
[smtp]
listen = "127.0.0.1:0"
hostname = "gw.test"
[relay]
upstream = "127.0.0.1:{upstream_port}"
tls = "off"
[store]
path = "{(tmp_path / 'store').as_posix()}"
[metrics]
listen = ""
[policy]
internal_domains = ["example.jp"]
[quarantine]
language = "{language}"
{extra}
[[approvers]]
senders = ["*@soumu.example.jp"]
approvers = ["kacho@example.jp", "bucho@example.jp"]
deputies = ["dairi@example.jp"]

[[approvers]]
senders = ["kacho@example.jp", "jinji.example.jp"]
approvers = ["bucho@example.jp", "kacho@example.jp"]

{people_toml(PEOPLE if people is None else people)}
{tail}
""", encoding="utf-8")
    return p


def my_login() -> str:
    """The OS login this test process runs as (what the gateway reads from SO_PEERCRED)."""
    import os
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def people_with_me(address: str = "kacho@example.jp") -> dict[str, str | Sequence[str]]:
    """PEOPLE, with `address` bound to this process's own login instead (so the CLI acts as it)."""
    out: dict[str, str | Sequence[str]] = {k: v for k, v in PEOPLE.items() if v != address}
    out[my_login()] = address
    return out


def load(tmp_path: Path, **kw: object) -> Config:
    return load_config(config_toml(tmp_path, **kw))  # type: ignore[arg-type]


def csv_bytes(numbers: Sequence[str]) -> bytes:
    return ("氏名,個人番号\n" + "".join(f"住民{i},{n}\n" for i, n in enumerate(numbers))).encode("utf-8")


def mail_with_numbers(sender: str, rcpts: Sequence[str], numbers: Sequence[str], subject: str = "名簿の送付") -> bytes:
    """A message whose body and CSV attachment carry the numbers next to the keyword 個人番号."""
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"] = sender
    m["To"] = ", ".join(rcpts)
    m["Subject"] = subject
    m.set_content("お世話になっております。\n" + "\n".join(f"個人番号: {n}" for n in numbers) + "\n", charset="utf-8")
    m.add_attachment(csv_bytes(numbers), maintype="text", subtype="csv", filename="meibo.csv")
    return m.as_bytes()


@dataclass(frozen=True)
class Held:
    id: str
    raw: bytes
    numbers: tuple[str, ...]


def put_held(store: Store, config: Config, *, sender: str = "tanaka@soumu.example.jp",
             rcpts: Sequence[str] = ("partner@example.com",), n: int = 3, required: int = 1,
             expires_in: float = 7 * 86400, with_notices: bool = True, seed: int = 7) -> Held:
    """Commit a held message the way the pipeline would, with its held notices."""
    numbers = tuple(synthetic_numbers(n, seed))
    raw = mail_with_numbers(sender, rcpts, numbers)
    mid = new_id()
    rel = store.write_spool(mid, raw)
    now = store.clock()
    csv = csv_bytes(numbers)
    m = NewMessage(
        id=mid, sender=sender, recipients=tuple(rcpts), spool=rel, size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(), arrived=now, state=HELD, subject="名簿の送付", verdict="hold",
        rules=("my_number",), reason=f"My Number x{n} with keyword",
        findings=({"rule": "my_number", "detector": "my_number", "count": n, "severity": "high",
                   "part": "meibo.csv", "sample": mask_number(numbers[0])},),
        records=n, parts=({"path": "body", "chars": 100, "tables": 0, "unscannable": "", "detail": ""},),
        approvals_required=required, expires_at=now + expires_in,
        attachments=({"filename": "meibo.csv", "content_type": "text/csv", "size": len(csv),
                      "sha256": hashlib.sha256(csv).hexdigest()},))
    notices = Notices(config, "gw.test").for_accept(m) if with_notices else ()
    store.accept(m, notices)
    return Held(mid, raw, numbers)


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """dlpgate.cli.main in-process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse usage errors
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def notices_in(store: Store) -> list[dict[str, object]]:
    """Queued notice rows, with their text, oldest first."""
    import email

    out = []
    for d in store.list(kind="notice"):
        raw = store.read_spool(d["id"])
        msg = email.message_from_bytes(raw, policy=SMTP_POLICY)
        body = msg.get_body(("plain",))
        out.append({"id": d["id"], "to": d["recipients"], "subject": str(msg["Subject"]),
                    "text": body.get_content() if body is not None else "", "raw": raw, "from": str(msg["From"])})
    return out


def assert_no_identifier(text: str | bytes, numbers: Sequence[str]) -> None:
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for n in numbers:
        assert n not in s, f"unmasked identifier {mask_number(n)} in output"


class ControlThread:
    """The gateway's authority and control socket on a store the test fills itself, served from
    a thread of its own (the CLI under test is synchronous and runs in the test's thread).

    `as_person` calls the authority as another login, the way the web console does."""

    def __init__(self, config: Config) -> None:
        import asyncio
        import threading

        from dlpgate.auditkey import AuditKey

        self.config = config
        self.key, _ = AuditKey.load_or_create(config.audit_key_path)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self._thread.start()
        assert self._ready.wait(60), "control thread did not start"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        import asyncio

        from dlpgate import audit
        from dlpgate.control import Authority, ControlServer
        from dlpgate.store import AsyncStore

        asyncio.set_event_loop(self.loop)
        cfg, key = self.config, self.key

        async def start() -> None:
            self.store = AsyncStore(cfg.store_path, signer=key.sign)
            self.witness = audit.Witness(key, cfg.audit_witness_path)
            await self.store.run(lambda s: self.witness.write(s, force=True))
            self.authority = Authority(cfg, self.store, hostname="gw.test",
                                       on_decision=lambda mid: asyncio.ensure_future(
                                           self.store.run(lambda s: self.witness.write(s, force=True))),
                                       verify=lambda s: audit.verify(s, key, cfg.audit_witness_path),
                                       public_key=key)
            self.server = ControlServer(self.authority, cfg.control_socket, cfg.control.group)
            await self.server.start()

        try:
            self.loop.run_until_complete(start())
        except BaseException as e:  # noqa: BLE001
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def as_person(self, login: str, op: str, **args: object) -> object:
        import asyncio

        from dlpgate.control import Caller

        fut = asyncio.run_coroutine_threadsafe(self.authority.call(Caller(login, None, "web"), op, args), self.loop)
        return fut.result(60)

    def witness_now(self) -> None:
        import asyncio

        async def w() -> None:
            await self.store.run(lambda s: self.witness.write(s, force=True))

        asyncio.run_coroutine_threadsafe(w(), self.loop).result(60)

    def close(self) -> None:
        import asyncio

        async def stop() -> None:
            await self.server.stop()
            self.authority.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(60)
        self.store.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


def signed_store(config: Config) -> Store:
    """A store that signs its audit appends with the gateway's key (as the gateway's own does)."""
    from dlpgate.auditkey import signer_for

    return Store(config.store_path, signer=signer_for(config))
