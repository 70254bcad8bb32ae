"""Values the scanner returns. No full identifier ever leaves the scanner: samples are masked."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("low", "medium", "high")
SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}


@dataclass(frozen=True)
class Finding:
    rule: str  # rule id from rules/, e.g. "my_number"
    detector: str  # detector name, e.g. "my_number", "personal_records", "unscannable"
    count: int
    severity: str  # "low" | "medium" | "high"
    part: str  # part path, e.g. "名簿.xlsx/Sheet1"
    sample: str = ""  # masked, e.g. "6214********"; "" when there is nothing to show

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "detector": self.detector,
            "count": self.count,
            "severity": self.severity,
            "part": self.part,
            "sample": self.sample,
        }

    @staticmethod
    def from_json(d: dict[str, object]) -> Finding:
        return Finding(
            rule=str(d["rule"]),
            detector=str(d["detector"]),
            count=int(d["count"]),  # type: ignore[call-overload]
            severity=str(d["severity"]),
            part=str(d["part"]),
            sample=str(d.get("sample", "")),
        )


@dataclass(frozen=True)
class ScanResult:
    findings: tuple[Finding, ...]
    records: int = 0  # largest personal-record table found (0 if none)
