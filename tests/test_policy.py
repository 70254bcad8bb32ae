"""Policy: recipient classes, the default decision matrix, rule actions, issue-8 header rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlpgate.errors import RuleError
from dlpgate.extract.model import Attachment
from dlpgate.policy import MessageFacts, Policy
from dlpgate.scan.model import Finding, ScanResult
from dlpgate.scan.rules import default_rules_dir

POLICY = Policy.load(internal_domains=["city.example.jp"])
INTERNAL = "kacho@city.example.jp"
EXTERNAL = "tanto@vendor.example.com"
PERSONAL = "someone@gmail.com"


def result(*severities: str, detector: str = "my_number", records: int = 0) -> ScanResult:
    count = records or 1
    return ScanResult(tuple(Finding(detector, detector, count, s, "body", "6214********") for s in severities), records)


def facts(*rcpts: str, **kw: object) -> MessageFacts:
    return MessageFacts(sender="me@city.example.jp", recipients=tuple(rcpts), **kw)  # type: ignore[arg-type]


def test_recipient_classes() -> None:
    assert POLICY.recipient_class("a@city.example.jp") == "internal"
    assert POLICY.recipient_class("a@soumu.city.example.jp") == "internal"
    assert POLICY.recipient_class("A@GMAIL.COM") == "personal_mail"
    assert POLICY.recipient_class("x@i.softbank.jp") == "personal_mail"
    assert POLICY.recipient_class("x@docomo.ne.jp") == "personal_mail"
    assert POLICY.recipient_class("x@notgmail.com") == "external"
    assert Policy.load().recipient_class("a@city.example.jp") == "external"  # no internal domains configured


@pytest.mark.parametrize(
    "rcpt,severities,action",
    [
        (EXTERNAL, (), "clean"),
        (EXTERNAL, ("low",), "clean"),
        (EXTERNAL, ("medium",), "hold"),
        (EXTERNAL, ("high",), "hold"),
        (PERSONAL, ("low",), "hold"),
        (PERSONAL, (), "clean"),
        (INTERNAL, ("medium",), "clean"),
        (INTERNAL, ("high",), "hold"),
    ],
)
def test_default_matrix(rcpt: str, severities: tuple[str, ...], action: str) -> None:
    assert POLICY.decide(result(*severities), facts(rcpt)).action == action


def test_mixed_recipients_take_the_strictest() -> None:
    v = POLICY.decide(result("medium"), facts(INTERNAL, EXTERNAL))
    assert v.action == "hold" and v.rules == ("external_personal_data",)
    assert "個人情報" in v.reason


def test_two_approvers_for_large_rosters() -> None:
    big = result("high", detector="personal_records", records=150)
    v = POLICY.decide(big, facts(EXTERNAL))
    assert v.action == "hold" and v.approvals_required == 2 and "records_two_approvers" in v.rules
    assert "150" in v.reason
    assert POLICY.decide(result("medium", detector="personal_records", records=20), facts(EXTERNAL)).approvals_required == 1


def write_rules(tmp_path: Path, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    for f in default_rules_dir().glob("*.toml"):
        shutil.copy(f, tmp_path / f.name)
    p = tmp_path / "policy.toml"
    text = p.read_text(encoding="utf-8")
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    p.write_text(text + extra, encoding="utf-8")
    return tmp_path


def test_reject_and_log_actions(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, extra='''
[[rule]]
id = "cards_reject"
action = "reject"
reason = "カード番号は送信できません。"
when = { detectors = ["credit_card"], recipient_class = ["external"] }

[[rule]]
id = "try_subject"
action = "log"
when = { subject_keywords = ["名簿"] }
''')
    policy = Policy.load(rules, ["city.example.jp"])
    v = policy.decide(result("medium", detector="credit_card"), facts(EXTERNAL, subject="対象者ﾒｲﾎﾞ 名簿"))
    assert v.action == "reject" and v.rules == ("cards_reject",) and v.logged == ("try_subject",)
    assert v.reason == "カード番号は送信できません。"
    v = policy.decide(result(), facts(EXTERNAL, subject="名簿"))
    assert v.action == "clean" and v.logged == ("try_subject",)


def test_header_level_rule_all_of_and_any_of(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, extra='''
[[rule]]
id = "shimin_xlsx_out"
action = "hold"
reason = "市民課から外部への表計算ファイル"
when = { sender = ["*@shimin.city.example.jp"], recipient_class = ["external"] }
[[rule.any]]
attachment_types = ["xlsx"]
[[rule.any]]
attachment_names = ["*名簿*"]
''')
    policy = Policy.load(rules, ["city.example.jp"])
    xlsx = (Attachment("a.xlsx", "xlsx", 10, "0" * 64),)
    roster = (Attachment("名簿.pdf", "pdf", 10, "0" * 64),)
    sender = "x@shimin.city.example.jp"
    assert policy.decide(result(), MessageFacts(sender, (EXTERNAL,), attachments=xlsx)).rules == ("shimin_xlsx_out",)
    assert policy.decide(result(), MessageFacts(sender, (EXTERNAL,), attachments=roster)).action == "hold"
    assert policy.decide(result(), MessageFacts(sender, (INTERNAL,), attachments=xlsx)).action == "clean"
    assert policy.decide(result(), MessageFacts("y@soumu.city.example.jp", (EXTERNAL,), attachments=xlsx)).action == "clean"
    checks = {c.rule: c for c in policy.explain(result(), MessageFacts(sender, (EXTERNAL,), attachments=xlsx))}
    assert checks["shimin_xlsx_out"].matched and "attachment type matches" in checks["shimin_xlsx_out"].why
    assert not checks["external_personal_data"].matched and "NOT" in checks["external_personal_data"].why


def visible(n: int, domains: int) -> tuple[str, ...]:
    return tuple(f"resident{i}@d{i % domains}.example.net" for i in range(n))


def test_exposed_recipients_default_hold_without_addresses_in_reason() -> None:
    to = visible(15, 2)
    v = POLICY.decide(result(), MessageFacts("me@city.example.jp", to, header_to=to))
    assert v.action == "hold" and v.rules == ("exposed_recipients",)
    assert "15" in v.reason and "Bcc" in v.reason and "@" not in v.reason
    assert [(f.detector, f.severity, f.count) for f in v.extra_findings] == [("exposed_recipients", "medium", 15)]
    high = visible(31, 2)
    v = POLICY.decide(result(), MessageFacts("me@city.example.jp", high, header_cc=high))
    assert v.extra_findings[0].severity == "high"


def test_exposed_recipients_thresholds() -> None:
    ten = visible(10, 3)
    assert POLICY.decide(result(), MessageFacts("me@city.example.jp", ten, header_to=ten)).action == "clean"
    four_domains = visible(4, 4)
    assert POLICY.decide(result(), MessageFacts("me@city.example.jp", four_domains, header_to=four_domains)).action == "hold"
    internal = tuple(f"u{i}@city.example.jp" for i in range(30))
    assert POLICY.decide(result(), MessageFacts("me@city.example.jp", internal, header_to=internal)).action == "clean"
    # Bcc only: nothing visible
    assert POLICY.decide(result(), MessageFacts("me@city.example.jp", visible(30, 9))).action == "clean"


@pytest.mark.parametrize("action,expect", [("reject", "reject"), ("rewrite", "clean")])
def test_exposed_recipients_reject_or_rewrite(tmp_path: Path, action: str, expect: str) -> None:
    rules = write_rules(tmp_path, replace=('action = "hold"   # or "reject"', f'action = "{action}"   # or "reject"'))
    policy = Policy.load(rules)
    to = visible(30, 5)
    v = policy.decide(result(), MessageFacts("me@city.example.jp", to, header_to=to))
    assert v.action == expect and v.rewrite_recipients == (action == "rewrite")
    # content findings still hold a rewritten message
    v = policy.decide(result("high"), MessageFacts("me@city.example.jp", to, header_to=to))
    assert v.action == ("reject" if action == "reject" else "hold")
    assert v.rewrite_recipients == (action == "rewrite")


def test_first_contact(tmp_path: Path) -> None:
    att = (Attachment("a.pdf", "pdf", 10, "0" * 64),)
    v = POLICY.decide(result(), facts(EXTERNAL, attachments=att, first_contact_domains=("vendor.example.com",)))
    assert v.action == "clean" and v.logged == ("first_contact_attachment",)
    assert [(f.detector, f.severity) for f in v.extra_findings] == [("first_contact", "low")]
    rules = write_rules(tmp_path, replace=('id = "first_contact_attachment"\naction = "log"', 'id = "first_contact_attachment"\naction = "hold"'))
    v = Policy.load(rules).decide(result(), facts(EXTERNAL, attachments=att, first_contact_domains=("vendor.example.com",)))
    assert v.action == "hold" and v.rules == ("first_contact_attachment",)
    # a first-contact finding alone does not trip the content rules for personal mail
    assert POLICY.decide(result(), facts(PERSONAL, first_contact_domains=("gmail.com",))).action == "clean"


@pytest.mark.parametrize(
    "extra,key",
    [
        ('\n[[rule]]\nid = "x"\nactoin = "hold"\nwhen = { min_severity = "high" }\n', "rule[7].actoin"),
        ('\n[[rule]]\nid = "x"\naction = "quarantine"\nwhen = { min_severity = "high" }\n', "rule[7].action"),
        ('\n[[rule]]\nid = "x"\nwhen = { min_severity = "huge" }\n', "rule[7].when.min_severity"),
        ('\n[[rule]]\nid = "x"\nwhen = { recipient_klass = ["external"] }\n', "rule[7].when.recipient_klass"),
        ('\n[[rule]]\nid = "x"\naction = "rewrite"\nwhen = { min_severity = "high" }\n', "rule[7].action"),
        ('\n[[rule]]\nid = "internal_high"\nwhen = { min_severity = "high" }\n', "rule[7].id"),
        ('\n[[rule]]\nid = "x"\n', "rule[7].when"),
    ],
)
def test_bad_policy_key_is_named(tmp_path: Path, extra: str, key: str) -> None:
    rules = write_rules(tmp_path, extra=extra)
    with pytest.raises(RuleError) as err:
        Policy.load(rules)
    assert f"policy.toml: {key}:" in str(err.value)
