"""Policy: findings plus envelope and headers -> verdict (clean / hold / reject).

Rules live in `rules/policy.toml` (ordered, declarative: all-of `when`, optional any-of `any`)
and `rules/domains.toml` (personal-mail domains). The strongest action among the matching rules
wins: reject > hold > clean; `log` rules only record that they matched; `rewrite` (for exposed
recipient lists) lets the message through once the pipeline has moved the visible external
recipients to Bcc. Reasons shown to the sender never carry an identifier or an address.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlpgate.extract.model import Attachment
from dlpgate.scan.model import SEVERITIES, SEVERITY_RANK, Finding, ScanResult
from dlpgate.scan.normalize import normalise
from dlpgate.scan.rules import TomlReader, default_rules_dir, read_toml

POLICY_FILE = "policy.toml"
DOMAINS_FILE = "domains.toml"
ACTIONS = ("hold", "reject", "log", "rewrite")
CLASSES = ("internal", "personal_mail", "external")
POLICY_DETECTORS = frozenset({"exposed_recipients", "first_contact"})
_ACTION_RANK = {"clean": 0, "rewrite": 1, "hold": 2, "reject": 3}


@dataclass(frozen=True)
class MessageFacts:
    sender: str  # envelope MAIL FROM ("" for null sender)
    recipients: tuple[str, ...]  # envelope RCPT TO
    subject: str = ""
    header_to: tuple[str, ...] = ()  # visible To addresses
    header_cc: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    first_contact_domains: tuple[str, ...] = ()  # recipient domains this sender never mailed


@dataclass(frozen=True)
class Verdict:
    action: str  # "clean" | "hold" | "reject"
    rules: tuple[str, ...]  # rule ids that decided it
    reason: str  # short plain text; never an identifier or other recipients' addresses
    logged: tuple[str, ...] = ()  # rules in `log` (monitor-only) mode that matched
    approvals_required: int = 1  # 2 when a rule demands two approvers; 0 for clean mail (nothing to approve)
    rewrite_recipients: bool = False  # pipeline moves external To/Cc to undisclosed recipients
    extra_findings: tuple[Finding, ...] = ()  # policy-level findings (exposed_recipients, first_contact)


@dataclass(frozen=True)
class Condition:
    recipient_class: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    min_severity: str = ""
    min_records: int = 0
    sender: tuple[str, ...] = ()
    recipient_domain: tuple[str, ...] = ()
    subject_keywords: tuple[str, ...] = ()  # normalised
    attachment_types: tuple[str, ...] = ()
    attachment_names: tuple[str, ...] = ()
    min_attachment_bytes: int = 0
    has_attachment: bool | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    when: Condition
    any_of: tuple[Condition, ...] = ()
    approvals: int = 1
    reason: str = ""


@dataclass(frozen=True)
class ExposureLimits:
    max_addresses: int = 10
    max_domains: int = 3
    high_addresses: int = 30
    high_domains: int = 10


@dataclass(frozen=True)
class RuleCheck:
    """One rule's evaluation, for `scan --explain`."""

    rule: str
    action: str
    matched: bool
    why: str


@dataclass
class _Context:
    facts: MessageFacts
    findings: tuple[Finding, ...]
    records: int
    classes: dict[str, str] = field(default_factory=dict)  # recipient -> class
    exposed: tuple[int, int] = (0, 0)  # distinct external addresses, domains in To/Cc


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower().rstrip(".")


def _domain_in(domain: str, domains: frozenset[str]) -> bool:
    if domain in domains:
        return True
    parts = domain.split(".")
    return any(".".join(parts[i:]) in domains for i in range(1, len(parts)))


def _parse_condition(r: TomlReader) -> Condition:
    classes = r.str_list("recipient_class")
    for i, c in enumerate(classes):
        if c not in CLASSES + ("internal_only",):
            raise r.error(f"recipient_class[{i}]", f"must be one of {', '.join(CLASSES + ('internal_only',))}")
    min_severity = r.text("min_severity", "", choices=("",) + SEVERITIES)
    has_attachment = r.get("has_attachment", bool, None)
    cond = Condition(
        recipient_class=classes,
        detectors=r.str_list("detectors"),
        min_severity=min_severity,
        min_records=r.integer("min_records", 0),
        sender=tuple(s.lower() for s in r.str_list("sender")),
        recipient_domain=tuple(s.lower() for s in r.str_list("recipient_domain")),
        subject_keywords=tuple(normalise(s) for s in r.str_list("subject_keywords")),
        attachment_types=tuple(s.lower() for s in r.str_list("attachment_types")),
        attachment_names=r.str_list("attachment_names"),
        min_attachment_bytes=r.integer("min_attachment_bytes", 0),
        has_attachment=has_attachment,
    )
    r.finish()
    if cond == Condition():
        raise r.error("", "a condition table must name at least one condition")
    return cond


class Policy:
    """Compiled policy for one rules directory and one set of internal domains."""

    def __init__(
        self,
        rules: Sequence[Rule],
        internal_domains: Sequence[str],
        personal_domains: Sequence[str],
        exposure: ExposureLimits = ExposureLimits(),
        first_contact: bool = True,
    ) -> None:
        self.rules = tuple(rules)
        self.internal = frozenset(d.lower().lstrip("@") for d in internal_domains)
        self.personal = frozenset(d.lower() for d in personal_domains)
        self.exposure = exposure
        self.first_contact = first_contact
        self._classes: dict[str, str] = {}  # address -> class: the same correspondents recur

    @classmethod
    def load(cls, rules_dir: str | os.PathLike[str] | None = None, internal_domains: Sequence[str] = ()) -> Policy:
        base = Path(rules_dir) if rules_dir is not None else default_rules_dir()
        dpath = base / DOMAINS_FILE
        dom = TomlReader(read_toml(dpath), str(dpath))
        internal = dom.str_list("internal")
        personal = dom.str_list("personal_mail")
        dom.finish()

        ppath = base / POLICY_FILE
        root = TomlReader(read_toml(ppath), str(ppath))
        ex = root.table("exposed_recipients")
        exposure = ExposureLimits(
            max_addresses=ex.integer("max_addresses", 10, minimum=1),
            max_domains=ex.integer("max_domains", 3, minimum=1),
            high_addresses=ex.integer("high_addresses", 30, minimum=1),
            high_domains=ex.integer("high_domains", 10, minimum=1),
        )
        ex.finish()
        fc = root.table("first_contact")
        first_contact = bool(fc.get("enabled", bool, True))
        fc.finish()
        rules: list[Rule] = []
        seen: set[str] = set()
        for rr in root.tables("rule"):
            rid = rr.text("id", "")
            if not rid:
                raise rr.error("id", "missing")
            if rid in seen:
                raise rr.error("id", f"duplicate rule id {rid!r}")
            seen.add(rid)
            action = rr.text("action", "hold", choices=ACTIONS)
            when = _parse_condition(rr.table("when", required=True))
            any_of = tuple(_parse_condition(t) for t in rr.tables("any"))
            approvals = rr.integer("approvals", 1, minimum=1)
            if approvals > 2:
                raise rr.error("approvals", "must be 1 or 2")
            reason = rr.text("reason", "")
            if action == "rewrite" and "exposed_recipients" not in when.detectors:
                raise rr.error("action", "rewrite applies only to rules on the exposed_recipients detector")
            rr.finish()
            rules.append(Rule(rid, action, when, any_of, approvals, reason))
        root.finish()
        return cls(rules, tuple(internal_domains) + internal, personal, exposure, first_contact)

    # ------------------------------------------------------------------ recipients

    def recipient_class(self, address: str) -> str:
        """"internal" | "personal_mail" | "external" for one address."""
        got = self._classes.get(address)
        if got is None:
            if len(self._classes) >= 20_000:
                self._classes.clear()
            got = self._classes[address] = self._recipient_class(address)
        return got

    def _recipient_class(self, address: str) -> str:
        domain = _domain(address)
        if domain and _domain_in(domain, self.internal):
            return "internal"
        if domain and _domain_in(domain, self.personal):
            return "personal_mail"
        return "external"

    def policy_findings(self, facts: MessageFacts) -> tuple[Finding, ...]:
        """exposed_recipients (visible external To/Cc) and first_contact findings."""
        out: list[Finding] = []
        addresses, domains = self._exposed(facts)
        lim = self.exposure
        if addresses > lim.max_addresses or domains > lim.max_domains:
            high = addresses > lim.high_addresses or domains > lim.high_domains
            out.append(Finding("exposed_recipients", "exposed_recipients", addresses, "high" if high else "medium",
                               "header", f"{addresses} addresses / {domains} domains"))
        if self.first_contact and facts.first_contact_domains:
            out.append(Finding("first_contact", "first_contact", len(set(facts.first_contact_domains)), "low",
                               "envelope", ""))
        return tuple(out)

    def _exposed(self, facts: MessageFacts) -> tuple[int, int]:
        visible = {a.strip().lower() for a in facts.header_to + facts.header_cc if a.strip()}
        external = {a for a in visible if self.recipient_class(a) != "internal"}
        return len(external), len({_domain(a) for a in external})

    # ------------------------------------------------------------------ decision

    def decide(self, result: ScanResult, facts: MessageFacts) -> Verdict:
        ctx = self._context(result, facts)
        matched = [r for r in self.rules if self._rule_matches(r, ctx)]
        enforced = [r for r in matched if r.action != "log"]
        logged = tuple(r.id for r in matched if r.action == "log")
        extra = tuple(f for f in ctx.findings if f.detector in POLICY_DETECTORS)
        if not enforced:
            # nothing to approve: 0, so a delivered message never reads "0 of 1 approvals"
            return Verdict("clean", (), "", logged=logged, approvals_required=0, extra_findings=extra)
        top = max(_ACTION_RANK[r.action] for r in enforced)
        deciding = [r for r in enforced if _ACTION_RANK[r.action] == top]
        rewrite = any(r.action == "rewrite" for r in enforced)
        action = "clean" if top == _ACTION_RANK["rewrite"] else next(iter(deciding)).action
        reasons = [self._reason(r, ctx) for r in deciding]
        return Verdict(
            action=action,
            rules=tuple(r.id for r in deciding),
            reason=" ".join(dict.fromkeys(x for x in reasons if x)),
            logged=logged,
            approvals_required=max(r.approvals for r in enforced if r.action != "rewrite") if top > 1 else 0,
            rewrite_recipients=rewrite and action != "reject",
            extra_findings=extra,
        )

    def explain(self, result: ScanResult, facts: MessageFacts) -> list[RuleCheck]:
        """Every rule in order with whether it matched and the conditions that decided it."""
        ctx = self._context(result, facts)
        out = []
        for r in self.rules:
            ok_when, why_when = self._condition(r.when, ctx)
            why = why_when
            ok = ok_when
            if ok and r.any_of:
                any_results = [self._condition(c, ctx) for c in r.any_of]
                ok = any(a for a, _ in any_results)
                why += "; any-of: " + " | ".join(w for _, w in any_results)
            out.append(RuleCheck(r.id, r.action, ok, why))
        return out

    def _context(self, result: ScanResult, facts: MessageFacts) -> _Context:
        ctx = _Context(facts, result.findings + self.policy_findings(facts), result.records)
        ctx.classes = {rcpt: self.recipient_class(rcpt) for rcpt in facts.recipients}
        ctx.exposed = self._exposed(facts)
        return ctx

    def _rule_matches(self, rule: Rule, ctx: _Context) -> bool:
        if not self._condition(rule.when, ctx, False)[0]:
            return False
        return not rule.any_of or any(self._condition(c, ctx, False)[0] for c in rule.any_of)

    def _condition(self, c: Condition, ctx: _Context, why: bool = True) -> tuple[bool, str]:
        """(matched, plain-text why). Stops at the first failing condition. The why is written
        only for `explain` (why=True): judging every message needs the answer alone."""
        facts = ctx.facts
        said: list[str] = []

        def fail(text: Callable[[], str]) -> tuple[bool, str]:
            return False, "; ".join(said + [f"NOT {text()}"]) if why else ""

        def note(text: Callable[[], str]) -> None:
            if why:
                said.append(text())

        if c.recipient_class:
            classes = set(ctx.classes.values())
            wanted = set(c.recipient_class)
            ok = bool(classes & wanted) or ("internal_only" in wanted and classes == {"internal"})
            text = lambda: f"recipient class in {sorted(wanted)} (have {sorted(classes)})"  # noqa: E731
            if not ok:
                return fail(text)
            note(text)
        if c.detectors or c.min_severity or c.min_records:
            names = set(c.detectors)
            rank = SEVERITY_RANK.get(c.min_severity, 0)
            hits = [
                f for f in ctx.findings
                if (f.detector in names if names else f.detector not in POLICY_DETECTORS)
                and SEVERITY_RANK[f.severity] >= rank
            ]
            if c.min_records:
                hits = [f for f in hits if f.detector == "personal_records" and f.count >= c.min_records]
            text = lambda: (f"finding of {sorted(names) or 'any content detector'}"  # noqa: E731
                            + (f" >= {c.min_severity}" if c.min_severity else "")
                            + (f" with >= {c.min_records} records" if c.min_records else ""))
            if not hits:
                return fail(text)
            note(lambda: text() + f" ({', '.join(sorted({f'{f.detector}/{f.severity}' for f in hits}))})")
        if c.sender:
            if not any(fnmatch.fnmatchcase(facts.sender.lower(), p) for p in c.sender):
                return fail(lambda: f"sender matches {list(c.sender)}")
            note(lambda: "sender matches")
        if c.recipient_domain:
            domains = {_domain(r) for r in facts.recipients}
            if not any(fnmatch.fnmatchcase(d, p) for d in domains for p in c.recipient_domain):
                return fail(lambda: f"recipient domain matches {list(c.recipient_domain)}")
            note(lambda: "recipient domain matches")
        if c.subject_keywords:
            subject = normalise(facts.subject)
            found = [k for k in c.subject_keywords if k in subject]
            if not found:
                return fail(lambda: f"subject contains one of {list(c.subject_keywords)}")
            note(lambda: f"subject contains {found[0]!r}")
        atts = facts.attachments
        if c.has_attachment is not None:
            if bool(atts) != c.has_attachment:
                return fail(lambda: "has attachment" if c.has_attachment else "has no attachment")
            note(lambda: "has attachment" if c.has_attachment else "has no attachment")
        if c.attachment_types:
            if not any(a.content_type.lower() in c.attachment_types for a in atts):
                return fail(lambda: f"attachment type in {list(c.attachment_types)}")
            note(lambda: "attachment type matches")
        if c.attachment_names:
            if not any(fnmatch.fnmatch(a.filename, p) for a in atts for p in c.attachment_names):
                return fail(lambda: f"attachment name matches {list(c.attachment_names)}")
            note(lambda: "attachment name matches")
        if c.min_attachment_bytes:
            if not any(a.size >= c.min_attachment_bytes for a in atts):
                return fail(lambda: f"attachment >= {c.min_attachment_bytes} bytes")
            note(lambda: f"attachment >= {c.min_attachment_bytes} bytes")
        return True, "; ".join(said)

    def _reason(self, rule: Rule, ctx: _Context) -> str:
        if not rule.reason:
            return f"rule {rule.id}"
        count = sum(f.count for f in ctx.findings if f.detector not in POLICY_DETECTORS)
        values: Mapping[str, Any] = {
            "count": count,
            "records": ctx.records,
            "addresses": ctx.exposed[0],
            "domains": ctx.exposed[1],
        }
        try:
            return rule.reason.format_map(values)
        except (KeyError, ValueError, IndexError):
            return rule.reason
