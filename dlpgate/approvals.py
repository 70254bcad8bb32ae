"""Who may approve whose mail, the decision itself, and the notices that tell people about it.

In the seed incident "taking data out needs the supervisor's approval" was an oral rule nobody
enforced. Here it is configuration: `[[approvers]]` maps sender patterns to approvers (and deputies,
代理承認者), and every release/reject is checked against it before the store records it:

- a pattern with "@" is a glob on the whole address (`*@soumu.example.jp`), one without is a glob
  on the sender's domain (`soumu.example.jp`, `*.example.jp`); a sender matching several routes
  may be approved by the approvers of any of them;
- nobody may decide on a message they sent, even if they approve other people's mail;
- an approver address acts only through an OS login bound to it in `[[people]]` (fail closed);
- a held message whose verdict asked for N approvals is released only by the N-th distinct
  person: distinct logins, not addresses (the count and the write are one store transaction:
  `Store.decide`).

Notices go through the upstream relay as ordinary queued mail of kind "notice" (never scanned, null
envelope sender). They never carry the flagged content: only the message id, the masked subject,
rule names, counts and part names.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DEFAULT_CONFIG_PATH, ApproverRoute, Config
from .errors import InputError, PermissionDenied, StateError
from .identities import Identities, mailbox
from .masking import mask_text
from .notices import Notice, queue_notice
from .store import DELAYED, HELD, RELEASED, AsyncStore, NewMessage, Store, write_spool_file

DECISIONS = ("release", "reject")


# ------------------------------------------------------------------------------ routing
def sender_matches(pattern: str, sender: str) -> bool:
    """Glob on the address when the pattern has an "@", else on the sender's domain."""
    p, s = pattern.strip().lower(), sender.strip().lower()
    if not s:
        return False
    if "@" in p:
        return fnmatch.fnmatchcase(s, p)
    return fnmatch.fnmatchcase(s.rpartition("@")[2], p)


@dataclass(frozen=True)
class Authorised:
    """The people who may decide on one sender's mail (the sender themself already removed)."""

    approvers: tuple[str, ...]
    deputies: tuple[str, ...]

    @property
    def everyone(self) -> tuple[str, ...]:
        return self.approvers + self.deputies

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, str) and addr.strip().lower() in self.everyone


class Router:
    """`[[approvers]]` routes, read-only. Cheap to build: one per decision or notice batch."""

    def __init__(self, routes: Sequence[ApproverRoute]) -> None:
        self.routes = tuple(routes)

    def for_sender(self, sender: str) -> Authorised:
        me = sender.strip().lower()
        box = mailbox(me)  # kacho+x@ is kacho@: he is not among the approvers of his own mail
        approvers: list[str] = []
        deputies: list[str] = []
        for r in self.routes:
            if any(sender_matches(p, me) for p in r.senders):
                approvers += [a for a in r.approvers if mailbox(a) != box and a not in approvers]
                deputies += [d for d in r.deputies if mailbox(d) != box and d not in deputies]
        return Authorised(tuple(approvers), tuple(d for d in deputies if d not in approvers))

    def check(self, msg_id: str, approver: str, sender: str) -> None:
        """Raise PermissionDenied unless `approver` may decide on mail from `sender`."""
        who = approver.strip().lower()
        if who and mailbox(who) == mailbox(sender):
            raise PermissionDenied(f"message {msg_id}: {who} sent it and may not approve or reject it"
                                   " (no self-approval)")
        if who not in self.for_sender(sender):
            raise PermissionDenied(f"message {msg_id}: {who} is not an approver for mail from"
                                   f" {sender or '<>'}")


# ------------------------------------------------------------------------------ decisions
@dataclass(frozen=True)
class Decision:
    """What a release/reject did: the new state and, for a release, approvals so far / required."""

    msg_id: str
    state: str  # released | held (waiting for another approver) | rejected
    approvals: int
    required: int


def check_binding(identities: Identities, msg_id: str, approver: str, login: str, sender: str) -> None:
    """An approver address acts only through a login bound to it in [[people]] (fail closed), and
    nobody decides on mail they sent, whichever of their addresses they act with."""
    bound = identities.logins_for(approver)
    if not bound:
        raise PermissionDenied(f"message {msg_id}: {approver} is bound to no login in [[people]]; nobody may"
                               " act as it (ask the administrator)")
    if login not in bound:
        raise PermissionDenied(f"message {msg_id}: {approver} is not one of your addresses ({login})")
    me = identities.identity(login)
    if sender and me.owns(sender):
        raise PermissionDenied(f"message {msg_id}: {login} sent it (as {sender}) and may not approve or reject"
                               " it (no self-approval)")


def decide(store: Store, config: Config, hostname: str, msg_id: str, approver: str, decision: str,
           reason: str = "", *, login: str | None = None, via: str = "",
           identities: Identities | None = None) -> Decision:
    """Check the caller against the routes and bindings, then record the decision with its notices.

    `login` is the caller the control API verified (kernel peer credentials or the web sign-in).
    None is for trusted in-process callers (tests, scripts): the one login bound to `approver`.
    The state check, the count of distinct logins and the notices are one store transaction, so
    two approvers acting at the same moment cannot both "release" a message or lose a notice.
    """
    who = approver.strip().lower()
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if "@" not in who:
        raise InputError(f"--approver must be an email address, got {approver!r}")
    clean_reason = _one_line(mask_text(reason), 500)
    if decision == "reject" and not clean_reason:
        raise InputError("a reason is required to reject a message (--reason TEXT)")
    ids = identities if identities is not None else Identities(config)
    row = store.get(msg_id)  # NotFound for an unknown id
    if row["kind"] != "mail":
        raise StateError(f"message {msg_id} is a gateway notice, not a held message")
    Router(config.approvers).check(msg_id, who, row["sender"])
    if login is None:
        bound = ids.logins_for(who)
        login = bound[0] if len(bound) == 1 else ""
    check_binding(ids, msg_id, who, login, row["sender"])
    notices = Notices(config, hostname)
    state = store.decide(msg_id, who, decision, clean_reason,
                         notices=lambda r, st: notices.for_decision(store, r["id"], st, who, clean_reason),
                         login=login, via=via)
    after = store.get(msg_id)
    approvals = len({a["login"] for a in after["approvals"] if a["decision"] == "release"})
    return Decision(msg_id, state, approvals, int(after["approvals_required"]))


# ------------------------------------------------------------------------------ notice texts
_TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "held.subject": "[dlpgate] 送信を保留しました: {subject}",
        "held.intro": "あなたが送信したメールから個人情報などが検出されたため、送信を保留しています。\n"
                      "承認者が承認するまで宛先には届きません。",
        "held.nobody": "このメールを承認できる人が設定されていません。システム管理者に連絡してください。",
        "wait.subject": "[dlpgate] 承認待ち: {sender} のメール {subject}",
        "wait.intro": "次のメールがあなたの承認を待っています。内容を確認して、承認または却下してください。",
        "remind.subject": "[dlpgate] 【再通知】承認待ち: {sender} のメール {subject}",
        "remind.intro": "次のメールがまだ承認を待っています（保留から {age}）。",
        "second.subject": "[dlpgate] 2人目の承認待ち: {sender} のメール {subject}",
        "second.intro": "{approver} が承認しました。送信には別の承認者による承認があと {left} 件必要です。",
        "released.subject": "[dlpgate] 承認されました: {subject}",
        "released.intro": "保留していたメールが {approver} により承認され、送信します。",
        "rejected.subject": "[dlpgate] 却下されました: {subject}",
        "rejected.intro": "保留していたメールは {approver} により却下されました。宛先には送信されません。",
        "expired.subject": "[dlpgate] 期限切れ: {subject}",
        "expired.intro": "保留していたメールは期限までに判断されなかったため、送信せずに破棄しました。",
        "autoreleased.subject": "[dlpgate] 期限切れにより送信: {subject}",
        "autoreleased.intro": "保留していたメールは期限までに判断されなかったため、設定に従い送信します。",
        "f.id": "メールID", "f.sender": "送信者", "f.recipients": "宛先", "f.subject": "件名",
        "f.reason": "理由", "f.findings": "検出内容", "f.records": "個人レコード数", "f.approvers": "承認者",
        "f.deputies": "代理承認者", "f.required": "必要な承認数", "f.expires": "期限",
        "f.comment": "コメント", "f.commands": "操作",
        "finding": "  - {rule} ({detector}): {count}件 [{severity}] {part}",
        "expires.reject": "{when}（それまでに判断がなければ送信せずに破棄）",
        "expires.release": "{when}（それまでに判断がなければ自動的に送信）",
        "short": "注意: 承認できる人が {n} 人しかいないため、必要な承認数 {required} に届きません。"
                 "承認者の設定が直るまで送信できません（却下または期限切れになります）。",
        "none": "なし",
        "footer": "この通知には保留されたメールの内容は含まれていません。\n-- dlpgate",
        "age.d": "{n}日", "age.h": "{n}時間", "age.m": "{n}分",
        "link.decide": "承認画面（サインインが必要です）", "link.mine": "送信者ページ（サインインが必要です）",
        "delayed.subject": "[dlpgate] 送信待ち: {subject}",
        "delayed.intro": "あなたのメールは {when} に送信されます。それまでは送信者ページから取り消せます。",
        "cmd.reason": "却下の理由",
    },
    "en": {
        "held.subject": "[dlpgate] Message held for approval: {subject}",
        "held.intro": "Your message was held because it appears to contain personal data.\n"
                      "It will not reach its recipients unless an approver releases it.",
        "held.nobody": "Nobody is configured to approve this message. Please contact the administrator.",
        "wait.subject": "[dlpgate] Waiting for your approval: message from {sender} {subject}",
        "wait.intro": "The message below is waiting for your approval. Please review it and release or"
                      " reject it.",
        "remind.subject": "[dlpgate] Reminder: waiting for your approval: message from {sender} {subject}",
        "remind.intro": "The message below is still waiting for approval (held for {age}).",
        "second.subject": "[dlpgate] Second approval needed: message from {sender} {subject}",
        "second.intro": "{approver} approved it. {left} more approval(s) by a different approver are"
                        " needed before it is sent.",
        "released.subject": "[dlpgate] Message released: {subject}",
        "released.intro": "Your held message was approved by {approver} and is being sent.",
        "rejected.subject": "[dlpgate] Message rejected: {subject}",
        "rejected.intro": "Your held message was rejected by {approver}. It will not be sent.",
        "expired.subject": "[dlpgate] Message expired: {subject}",
        "expired.intro": "Nobody decided on your held message in time. It was discarded without being sent.",
        "autoreleased.subject": "[dlpgate] Message sent after expiry: {subject}",
        "autoreleased.intro": "Nobody decided on your held message in time; as configured, it is being sent.",
        "f.id": "Message id", "f.sender": "Sender", "f.recipients": "Recipients", "f.subject": "Subject",
        "f.reason": "Reason", "f.findings": "Findings", "f.records": "Personal records",
        "f.approvers": "Approvers", "f.deputies": "Deputies", "f.required": "Approvals required",
        "f.expires": "Expires", "f.comment": "Comment", "f.commands": "Commands",
        "finding": "  - {rule} ({detector}): {count} [{severity}] {part}",
        "expires.reject": "{when} (discarded unless decided by then)",
        "expires.release": "{when} (sent automatically unless decided by then)",
        "short": "Note: only {n} approver(s) may act on this message but {required} approvals are needed; it cannot"
                 " be sent until the approver configuration is fixed (it can still be rejected or expire).",
        "none": "none",
        "footer": "This notice does not contain the held message's content.\n-- dlpgate",
        "age.d": "{n} days", "age.h": "{n} hours", "age.m": "{n} minutes",
        "link.decide": "Decide in the console (sign-in required)", "link.mine": "Your mail (sign-in required)",
        "delayed.subject": "[dlpgate] Waiting to be sent: {subject}",
        "delayed.intro": "Your message will be sent at {when}. Until then you can recall it from your page.",
        "cmd.reason": "why it is rejected",
    },
}


def config_flag(config: Config) -> str:
    """` --config PATH` when the CLI's default lookup (no --config, no $DLPGATE_CONFIG) would not
    find this config, else "": the command in a notice must reach the gateway that sent it."""
    if not config.source:
        return ""
    src = Path(config.source).resolve()
    try:
        if src == Path(DEFAULT_CONFIG_PATH).resolve():
            return ""
    except OSError:
        pass
    return f" --config {shlex.quote(str(src))}"


def _one_line(text: str, limit: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def may_auto_release(row: Mapping[str, Any]) -> bool:
    """Whether an expired hold may be sent without a decision (expire_action = "release").

    Not one that needed two approvers (the rule asked for more than one person's judgement) nor
    one the scanner could not read (nobody knows what it holds): those expire unsent unless
    `quarantine.expire_release_all` says otherwise."""
    if int(row["approvals_required"] or 1) > 1:
        return False
    rules = row["rules"]
    names = json.loads(rules) if isinstance(rules, str) else list(rules or ())
    return "unscannable" not in names


@dataclass(frozen=True)
class HeldFacts:
    """What a notice may say about a held message: nothing of its content but names and counts."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str  # masked
    reason: str
    findings: tuple[Mapping[str, Any], ...]
    records: int
    required: int
    expires_at: float | None
    arrived: float
    approved_by: tuple[str, ...] = ()

    @staticmethod
    def of_new(m: NewMessage) -> HeldFacts:
        return HeldFacts(m.id, m.sender, tuple(m.recipients), m.subject, m.reason, tuple(m.findings),
                         m.records, m.approvals_required, m.expires_at, m.arrived)

    @staticmethod
    def of_row(d: Mapping[str, Any]) -> HeldFacts:
        """From `Store.get` (recipients and approvals included)."""
        rcpts = tuple(r["rcpt"] if isinstance(r, Mapping) else str(r) for r in d.get("recipients", ()))
        approved = tuple(a["approver"] for a in d.get("approvals", ()) if a["decision"] == "release")
        return HeldFacts(d["id"], d["sender"], rcpts, d["subject"], d["reason"], tuple(d["findings"]),
                         int(d["records"]), int(d["approvals_required"]), d["expires_at"], d["arrived"],
                         approved)


class Notices:
    """Builds the human notices and runs expiry and reminders (the server's housekeeping hook).

    `config` is read on every call: the server swaps it on SIGHUP, and new routes and templates
    apply from the next notice on.
    """

    def __init__(self, config: Config, hostname: str) -> None:
        self.config = config
        self.hostname = hostname
        # the store's root is fixed for the process's life (a reload does not move the store)
        self.root = Path(config.store_path)

    # ---- helpers
    def _t(self, key: str, **kw: Any) -> str:
        lang = self.config.quarantine.language
        return _TEXTS.get(lang, _TEXTS["en"])[key].format(**kw)

    @property
    def notice_from(self) -> str:
        return self.config.quarantine.notice_from or f"postmaster@{self.hostname}"

    def _when(self, ts: float | None) -> str:
        return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))

    def _age(self, seconds: float) -> str:
        s = max(0, int(seconds))
        if s >= 86400:
            return self._t("age.d", n=s // 86400)
        if s >= 3600:
            return self._t("age.h", n=s // 3600)
        return self._t("age.m", n=max(1, s // 60))

    def _summary(self, f: HeldFacts, *, with_approvers: Authorised | None = None,
                 with_expiry: bool = True) -> list[str]:
        t = self._t
        none = t("none")
        # addresses are the sender's input too (`p123456789018@example.com`): masked like the subject
        lines = [f"{t('f.id')}: {f.id}", f"{t('f.sender')}: {mask_text(f.sender) or '<>'}",
                 f"{t('f.recipients')}: {_one_line(mask_text(', '.join(f.recipients)), 300)}",
                 f"{t('f.subject')}: {_one_line(f.subject, 200) or none}"]
        if f.reason:
            lines.append(f"{t('f.reason')}: {_one_line(mask_text(f.reason), 300)}")
        lines.append(f"{t('f.findings')}:")
        if f.findings:
            for x in f.findings[:20]:
                lines.append(t("finding", rule=x.get("rule", "?"), detector=x.get("detector", "?"),
                               count=x.get("count", 0), severity=x.get("severity", "?"),
                               part=_one_line(mask_text(str(x.get("part", ""))), 120)))
        else:
            lines.append(f"  {none}")
        if f.records:
            lines.append(f"{t('f.records')}: {f.records}")
        if with_approvers is not None:
            lines.append(f"{t('f.approvers')}: {', '.join(with_approvers.approvers) or none}")
            if with_approvers.deputies:
                lines.append(f"{t('f.deputies')}: {', '.join(with_approvers.deputies)}")
            lines.append(f"{t('f.required')}: {f.required}")
            if len(with_approvers.everyone) < f.required:
                lines.append(t("short", n=len(with_approvers.everyone), required=f.required))
        if with_expiry and f.expires_at is not None:
            q = self.config.quarantine
            action = q.expire_action
            if action == "release" and not q.expire_release_all and (
                    f.required > 1 or any(x.get("detector") == "unscannable" for x in f.findings)):
                action = "reject"  # never auto-released (may_auto_release): say what will happen
            lines.append(f"{t('f.expires')}: {t('expires.' + action, when=self._when(f.expires_at))}")
        return lines

    def _commands(self, msg_id: str) -> list[str]:
        """Commands that run as printed (copied into a shell on the gateway's host): they name this
        gateway's config unless the CLI's default lookup finds it anyway, and carry no [optional]
        brackets or placeholders a shell would pass on as arguments."""
        base = "dlpgate" + config_flag(self.config)
        reason = shlex.quote(self._t("cmd.reason"))
        return [f"{self._t('f.commands')}:",
                f"  {base} quarantine show {msg_id}",
                f"  {base} quarantine release {msg_id}",
                f"  {base} quarantine reject {msg_id} --reason {reason}"]

    def _link(self, key: str, path: str) -> list[str]:
        """A line pointing at the web console when `[web] base_url` is set. It leads to a sign-in;
        it carries no token and decides nothing by itself."""
        base = self.config.web.base_url.rstrip("/")
        return [f"{self._t(key)}: {base}{path}"] if base else []

    def _notice(self, to: Sequence[str], subject: str, body: list[str], kind: str, msg_id: str,
                now: float) -> NewMessage:
        text = "\n".join([*body, "", self._t("footer"), ""])
        root = self.root
        return queue_notice(lambda mid, data: write_spool_file(root, mid, data), hostname=self.hostname,
                            notice_from=self.notice_from,
                            notice=Notice(tuple(to), _one_line(subject, 180), text),
                            audit={"notice": kind, "for": msg_id}, now=now)

    def _subject(self, f: HeldFacts) -> str:
        return _one_line(f.subject, 80) or "-"

    # ---- the accept path (pipeline) ---------------------------------------------------
    def for_accept(self, m: NewMessage) -> Sequence[NewMessage]:
        """A message is being held: tell its sender why and who may approve, and the approvers."""
        if not self.config.quarantine.notify or m.kind != "mail":
            return ()
        if m.state == DELAYED:
            return self.for_delayed(m)
        f = HeldFacts.of_new(m)
        who = Router(self.config.approvers).for_sender(m.sender)
        out = []
        if m.sender:
            body = [self._t("held.intro"), ""]
            if not who.everyone:
                body += [self._t("held.nobody"), ""]
            body += self._summary(f, with_approvers=who)
            body += ["", *self._link("link.mine", "/mine")]
            out.append(self._notice([m.sender], self._t("held.subject", subject=self._subject(f)), body,
                                    "held", m.id, m.arrived))
        # approvers and deputies alike: a deputy (代理承認者) exists for the day the approver is away,
        # and learning of the hold only from the first reminder would leave the mail waiting meanwhile
        to = who.everyone
        if to:
            body = [self._t("wait.intro"), "", *self._link("link.decide", f"/m/{m.id}"), "",
                    *self._summary(f, with_approvers=who), "", *self._commands(m.id)]
            out.append(self._notice(to, self._t("wait.subject", sender=mask_text(m.sender) or "<>",
                                                subject=self._subject(f)), body, "approval_request",
                                    m.id, m.arrived))
        return out

    def wants_delayed(self, m: NewMessage) -> bool:
        """`[web] notify_delayed`: clean mail waiting out a real delay gets a notice with a recall link."""
        w = self.config.web
        return (w.notify_delayed and bool(w.base_url) and self.config.quarantine.notify and m.kind == "mail"
                and m.state == DELAYED and bool(m.sender) and (m.due_at or 0) > m.arrived + 1)

    def for_delayed(self, m: NewMessage) -> Sequence[NewMessage]:
        """The sender's "waiting to be sent" notice: when, to whom, and the link to recall it."""
        if not self.wants_delayed(m):
            return ()
        f = HeldFacts.of_new(m)
        t = self._t
        body = [t("delayed.intro", when=self._when(m.due_at)), "", *self._link("link.mine", "/mine"), "",
                f"{t('f.id')}: {f.id}", f"{t('f.recipients')}: {_one_line(', '.join(f.recipients), 300)}",
                f"{t('f.subject')}: {_one_line(f.subject, 200) or t('none')}"]
        return [self._notice([m.sender], t("delayed.subject", subject=self._subject(f)), body, "delayed", m.id,
                             m.arrived)]

    # ---- decisions ----------------------------------------------------------------------
    def for_decision(self, store: Store, msg_id: str, state: str, approver: str,
                     reason: str) -> Sequence[NewMessage]:
        """Notices for a release / reject / partial approval, inside the decision's transaction."""
        if not self.config.quarantine.notify:
            return ()
        f = HeldFacts.of_row(store.get(msg_id))
        now = store.clock()
        subj = self._subject(f)
        comment = [f"{self._t('f.comment')}: {reason}"] if reason else []
        if state == HELD:  # one of two approvals: ask the others
            who = Router(self.config.approvers).for_sender(f.sender)
            to = [a for a in who.everyone if a not in f.approved_by]
            if not to:
                return ()
            left = max(1, f.required - len(f.approved_by))
            body = [self._t("second.intro", approver=approver, left=left), "",
                    *self._link("link.decide", f"/m/{f.id}"), "",
                    *self._summary(f, with_approvers=who), "", *self._commands(f.id)]
            return [self._notice(to, self._t("second.subject", sender=mask_text(f.sender) or "<>", subject=subj), body,
                                 "second_approval", f.id, now)]
        if not f.sender:
            return ()
        key = "released" if state == RELEASED else "rejected"
        body = [self._t(f"{key}.intro", approver=approver), *comment, "",
                *self._summary(f, with_expiry=False)]
        return [self._notice([f.sender], self._t(f"{key}.subject", subject=subj), body, key, f.id, now)]

    def _for_expiry(self, store: Store, msg_id: str, state: str) -> Sequence[NewMessage]:
        if not self.config.quarantine.notify:
            return ()
        f = HeldFacts.of_row(store.get(msg_id))
        if not f.sender:
            return ()
        key = "autoreleased" if state == RELEASED else "expired"
        body = [self._t(f"{key}.intro"), "", *self._summary(f, with_expiry=False)]
        return [self._notice([f.sender], self._t(f"{key}.subject", subject=self._subject(f)), body, key, f.id,
                             store.clock())]

    def _reminder(self, store: Store, msg_id: str) -> Sequence[NewMessage]:
        """Reminders go to approvers and deputies alike: a deputy exists for when the approver is away."""
        f = HeldFacts.of_row(store.get(msg_id))
        who = Router(self.config.approvers).for_sender(f.sender)
        to = [a for a in who.everyone if a not in f.approved_by]
        if not to:
            return ()
        now = store.clock()
        body = [self._t("remind.intro", age=self._age(now - f.arrived)), "",
                *self._link("link.decide", f"/m/{f.id}"), "",
                *self._summary(f, with_approvers=who), "", *self._commands(f.id)]
        return [self._notice(to, self._t("remind.subject", sender=mask_text(f.sender) or "<>", subject=self._subject(f)),
                             body, "reminder", f.id, now)]

    # ---- housekeeping (server, every 30 s) ---------------------------------------------
    def expire(self, store: Store) -> list[str]:
        """Expire (or auto-release) overdue held messages with their sender notices; one transaction."""
        q = self.config.quarantine
        return store.expire_due(q.expire_action, lambda r, st: self._for_expiry(store, r["id"], st),
                                may_release=None if q.expire_release_all else may_auto_release)

    def remind(self, store: Store) -> list[str]:
        """Remind the approvers of messages held longer than `remind_every` since the last reminder."""
        q = self.config.quarantine
        if q.remind_every <= 0:
            return []
        done = []
        with store.transaction():
            for r in store.due_reminders(q.remind_every):
                if q.notify:
                    for n in self._reminder(store, r["id"]):
                        store.accept(n)
                done.append(r["id"])
        return done

    async def housekeep(self, store: AsyncStore, delivery: Any = None) -> tuple[list[str], list[str]]:
        """Expiry then reminders; wakes the delivery scheduler for the notices and auto-releases."""
        expired = await store.run(self.expire)
        reminded = await store.run(self.remind)
        if (expired or reminded) and delivery is not None:
            delivery.poke(time.time())
        return expired, reminded

