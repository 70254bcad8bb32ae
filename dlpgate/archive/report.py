"""The report a security officer reads: DIR/report.html (one self-contained page, inline SVG charts,
no script, no CDN), DIR/flagged.csv (one row per flagged message) and DIR/summary.csv (the
figures behind every chart).

Built from DIR/results.jsonl alone, so a resumed run and an uninterrupted one give the same
report. Every string shown is masked again here (masking.mask_text) and HTML-escaped: the report
must not become the leak, whatever a result line holds.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlpgate.masking import mask_text
from dlpgate.terminal import for_terminal

TOP = 15
LARGEST = 20


@dataclass
class Summary:
    messages: int = 0
    flagged: int = 0
    unreadable: int = 0
    skipped: int = 0
    bytes: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    months: Counter[str] = field(default_factory=Counter)
    detectors: Counter[str] = field(default_factory=Counter)
    senders: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    largest: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    first: str = ""
    last: str = ""


def summarise(results: Path) -> tuple[Summary, list[dict[str, Any]]]:
    s = Summary()
    flagged: list[dict[str, Any]] = []
    with results.open("r", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            s.bytes += int(r.get("bytes", 0))
            if "skipped" in r:
                s.skipped += 1
                continue
            s.messages += 1
            s.verdicts[r["verdict"]] += 1
            date = r.get("date", "")
            if date:
                s.first = min(s.first, date) if s.first else date
                s.last = max(s.last, date)
            if r["verdict"] == "unreadable":
                s.unreadable += 1
                s.damaged.append((r["location"], r.get("error", "")))
                continue
            if not r["findings"]:
                continue
            s.flagged += 1
            s.months[date[:7] if date else "unknown"] += 1
            for d in sorted({f["detector"] for f in r["findings"]}):
                s.detectors[d] += 1
            s.senders[r.get("sender") or "(none)"] += 1
            for d in r.get("recipient_domains", []) or ["(none)"]:
                s.domains[d] += 1
            flagged.append(r)
    s.largest = sorted(flagged, key=lambda r: (-int(r["records"]), r["location"]))[:LARGEST]
    return s, flagged


def write_report(directory: str, internal_domains: Sequence[str] = (), rules_dir: str | None = None) -> Summary:
    from dlpgate.policy import Policy

    d = Path(directory)
    summary, flagged = summarise(d / "results.jsonl")
    policy = Policy.load(rules_dir, internal_domains)

    def domain_class(domain: str) -> str:
        return str(policy.recipient_class(f"x@{domain}")) if "." in domain else ""

    _write_csv(d, summary, flagged, domain_class)
    (d / "report.html").write_text(render_html(summary, domain_class), encoding="utf-8")
    return summary


def _write_csv(d: Path, s: Summary, flagged: list[dict[str, Any]], domain_class: Any) -> None:
    with (d / "flagged.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "sender", "recipient_domains", "subject", "verdict", "records", "findings",
                    "location", "message_id"])
        for r in flagged:
            findings = "; ".join(f"{x['detector']} x{x['count']} in {x['part']}" + (f" [{x['sample']}]" if x["sample"] else "")
                                 for x in r["findings"])
            w.writerow([_date(r.get("date", ""))] + [_m(v) for v in (r.get("sender", ""), " ".join(r.get("recipient_domains", [])),
                                        r.get("subject", ""), r["verdict"], r["records"], findings, r["location"],
                                        r.get("message_id", ""))])
    with (d / "summary.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "key", "value", "note"])
        for key, value in (("messages", s.messages), ("flagged", s.flagged), ("unreadable", s.unreadable),
                           ("outside --since/--until", s.skipped), ("bytes", s.bytes)):
            w.writerow(["total", key, value, ""])
        for verdict, n in sorted(s.verdicts.items()):
            w.writerow(["verdict", verdict, n, ""])
        for month, n in sorted(s.months.items()):
            w.writerow(["flagged per month", month, n, ""])
        for det, n in s.detectors.most_common():
            w.writerow(["flagged per detector", det, n, ""])
        for sender, n in s.senders.most_common(TOP):
            w.writerow(["top senders", _m(sender), n, ""])
        for dom, n in s.domains.most_common(TOP):
            w.writerow(["recipient domains", _m(dom), n, domain_class(dom)])
        for r in s.largest:
            w.writerow(["largest record counts", _m(r["location"]), r["records"], _date(r.get("date", ""))])
        for loc, err in s.damaged:
            w.writerow(["unreadable", _m(loc), "", _m(err)])


def _date(value: object) -> str:
    """A date the judge formatted itself (ISO 8601): shown as it is, not digit-masked; anything
    else is treated as free text."""
    text = str(value)
    if _ISO_DATE.fullmatch(text):
        return text[:16].replace("T", " ")
    return _e(text)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2})?")


def _m(value: object) -> str:
    """Masked, and control or bidi characters (from senders) written as \\uXXXX, never obeyed."""
    return for_terminal(mask_text(str(value)))


def _e(value: object) -> str:
    return html.escape(_m(value))


# ------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans JP",sans-serif;margin:24px;color:#1f2933;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:24px} .card.alert b{color:#b42318}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:16px}
table{border-collapse:collapse;font-size:13px;width:100%} th,td{border-bottom:1px solid #e4e7eb;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f5f7fa} .num{text-align:right} .tag{background:#fde8e8;color:#b42318;border-radius:3px;padding:0 4px;font-size:11px}
.muted{color:#616e7c;font-size:12px} svg text{font-family:inherit}
"""


def _bar_chart_vertical(items: list[tuple[str, int]], title: str) -> str:
    if not items:
        return f'<p class="muted">{html.escape(title)}: nothing flagged.</p>'
    width, height, left, bottom, top = 720, 240, 40, 50, 16
    # whole-number gridlines (counts of mail): at most 4 steps, none repeated when the peak is small
    steps = min(4, max(n for _, n in items) or 1)
    step = -(-(max(n for _, n in items) or 1) // steps)
    peak = step * steps
    slot = (width - left - 10) / len(items)
    bar = max(min(slot * 0.7, 48), 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}" viewBox="0 0 {width} {height}">']
    plot = height - bottom - top
    for k in range(steps + 1):
        y = top + plot * k / steps
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#616e7c">'
                     f'{step * (steps - k)}</text>')
    every = max(1, len(items) // 24)
    for i, (label, n) in enumerate(items):
        h = plot * n / peak
        x = left + i * slot + (slot - bar) / 2
        parts.append(f'<rect x="{x:.1f}" y="{top + plot - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="#c2410c">'
                     f'<title>{_e(label)}: {n}</title></rect>')
        if i % every == 0:
            cx = x + bar / 2
            parts.append(f'<text x="{cx:.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="end" '
                         f'transform="rotate(-45 {cx:.1f} {height - bottom + 14})" fill="#323f4b">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart_horizontal(items: list[tuple[str, int]], title: str, marks: dict[str, str] | None = None) -> str:
    if not items:
        return f'<p class="muted">{html.escape(title)}: nothing flagged.</p>'
    row, label_w, width = 22, 230, 560
    height = row * len(items) + 10
    peak = max(n for _, n in items) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}" viewBox="0 0 {width} {height}">']
    for i, (label, n) in enumerate(items):
        y = 5 + i * row
        w = (width - label_w - 50) * n / peak
        mark = (marks or {}).get(label, "")
        color = "#b42318" if mark == "personal_mail" else "#2563eb"
        shown = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end" fill="#1f2933">'
                     f'{_e(shown)}{" ⚠" if mark == "personal_mail" else ""}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" fill="{color}">'
                     f'<title>{_e(label)}: {n}</title></rect>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="11" fill="#323f4b">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def month_series(months: Counter[str]) -> list[tuple[str, int]]:
    """Flagged counts for every month from the first to the last (quiet months as 0, so the time
    axis is true), then "unknown" for undated mail."""
    dated = sorted(m for m in months if re.fullmatch(r"\d{4}-\d{2}", m))
    out: list[tuple[str, int]] = []
    if dated:
        y, mo = int(dated[0][:4]), int(dated[0][5:])
        last = (int(dated[-1][:4]), int(dated[-1][5:]))
        while (y, mo) <= last and len(out) < 1200:
            key = f"{y:04d}-{mo:02d}"
            out.append((key, months.get(key, 0)))
            y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
    out.extend((m, n) for m, n in sorted(months.items()) if m not in dated)
    return out


def render_html(s: Summary, domain_class: Any) -> str:
    months = month_series(s.months)
    marks = {d: domain_class(d) for d in s.domains}
    personal = sum(n for d, n in s.domains.items() if marks.get(d) == "personal_mail")
    period = f"{s.first[:10]} – {s.last[:10]}" if s.first else "no dated messages"
    out = ['<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>dlpgate archive report</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>dlpgate — archive audit</h1>",
           f'<p class="muted">Period of the mail read: {html.escape(period)}. Identifiers are masked '
           "(first 4 digits shown). Verdicts are those the gateway would give today.</p>",
           '<div class="cards">',
           f'<div class="card"><b>{s.messages:,}</b>messages read</div>',
           f'<div class="card alert"><b>{s.flagged:,}</b>flagged</div>',
           f'<div class="card"><b>{s.verdicts.get("hold", 0):,}</b>would be held</div>',
           f'<div class="card"><b>{s.verdicts.get("reject", 0):,}</b>would be rejected</div>',
           f'<div class="card alert"><b>{personal:,}</b>flagged to personal mail</div>',
           f'<div class="card"><b>{s.unreadable:,}</b>could not be read</div>',
           f'<div class="card"><b>{s.bytes / 1e6:,.1f} MB</b>archive read</div>',
           "</div>",
           "<h2>Flagged mail per month</h2>", _bar_chart_vertical(months, "flagged mail per month"),
           '<div class="grid"><div>',
           "<h2>Flagged mail per detector</h2>", _bar_chart_horizontal(s.detectors.most_common(), "per detector"),
           "</div><div>",
           "<h2>Top senders of flagged mail</h2>", _bar_chart_horizontal(s.senders.most_common(TOP), "top senders"),
           "</div></div>",
           "<h2>Recipient domains of flagged mail</h2>",
           '<p class="muted">Red, marked ⚠: personal-mail domains (rules/domains.toml).</p>',
           _bar_chart_horizontal(s.domains.most_common(TOP), "recipient domains", marks),
           "<h2>Largest record counts</h2>"]
    if s.largest:
        out.append("<table><tr><th>date</th><th>sender</th><th>recipient domains</th><th>subject</th>"
                   "<th class=num>records</th><th>findings</th><th>location</th></tr>")
        for r in s.largest:
            doms = " ".join(_e(d) + (' <span class="tag">personal</span>' if marks.get(d) == "personal_mail" else "")
                            for d in r.get("recipient_domains", []))
            findings = "<br>".join(f"{_e(f['detector'])} ×{int(f['count'])} in {_e(f['part'])}"
                                   + (f" [{_e(f['sample'])}]" if f["sample"] else "") for f in r["findings"])
            out.append(f"<tr><td>{_date(r.get('date', ''))}</td><td>{_e(r.get('sender', ''))}</td><td>{doms}</td>"
                       f"<td>{_e(r.get('subject', ''))}</td><td class=num>{int(r['records']):,}</td>"
                       f"<td>{findings}</td><td>{_e(r['location'])}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="muted">No flagged message.</p>')
    out.append("<h2>Could not be read</h2>")
    if s.damaged:
        out.append(f"<p>{len(s.damaged):,} messages or blocks were damaged and skipped:</p><table>"
                   "<tr><th>location</th><th>reason</th></tr>")
        for loc, err in s.damaged[:200]:
            out.append(f"<tr><td>{_e(loc)}</td><td>{_e(err)}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="muted">Every message was read.</p>')
    out.append('<p class="muted">Every flagged message: flagged.csv; the figures of each chart: summary.csv.</p>')
    out.append("</body></html>")
    return "\n".join(out)
