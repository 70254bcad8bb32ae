"""Prometheus metrics. Label values are bounded sets: never an address, subject or identifier."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

FAILURE_REASONS = ("encrypted", "corrupt", "limit", "unsupported")

RECEIVED = Counter("dlpgate_messages_received_total", "SMTP messages by accept outcome",
                   ["result"], registry=REGISTRY)
REFUSED = Counter("dlpgate_smtp_refused_total", "SMTP connections/commands refused, by reason",
                  ["reason"], registry=REGISTRY)
VERDICTS = Counter("dlpgate_verdicts_total", "Verdicts (clean, hold, reject, log)", ["verdict"], registry=REGISTRY)
FINDINGS = Counter("dlpgate_findings_total", "Findings by detector and severity", ["detector", "severity"],
                   registry=REGISTRY)
DELIVERIES = Counter("dlpgate_deliveries_total", "Per-recipient delivery results", ["result"], registry=REGISTRY)


class _DecisionCollector:
    """Releases, rejections, expiries and recalls, counted from the audit log.

    Supervisors decide from the CLI, in another process, so an in-process counter would miss
    them; the gateway's housekeeping folds new audit entries into `counts` instead. On a cluster
    (one PostgreSQL store) the audit chain is shared, so every node reports the cluster's total:
    a dashboard aggregates it with max(), not sum() (the help text says so).
    """

    def __init__(self) -> None:
        self.counts: dict[str, float] = {"released": 0.0, "rejected": 0.0, "expired": 0.0, "recalled": 0.0}
        self.store = ""  # which store the counts are of (store_label): nodes of one cluster share it

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily("dlpgate_decisions", "Releases, rejections, expiries and recalls in the store "
                                  "(a shared store: the cluster's total on every node, so aggregate with "
                                  "max by (store), then sum)", labels=["decision", "store"])
        for k, v in sorted(self.counts.items()):
            fam.add_metric([k, self.store], v)
        yield fam


def store_label(url: str, path: str, host: str) -> str:
    """A short name of a store that every node sharing it computes alike and that says nothing of it:
    12 letters drawn from SHA-256 over the PostgreSQL URL without its password (host, port,
    database), or over this host and the SQLite directory. Letters only: no label value of the
    exposition holds a digit run that could be mistaken for (or hide) a number."""
    import hashlib
    from urllib.parse import urlsplit

    if url:
        u = urlsplit(url)
        ident = f"pg|{u.hostname or ''}|{u.port or ''}|{u.path}"
    else:
        ident = f"sqlite|{host}|{path}"
    return "".join(chr(97 + b % 26) for b in hashlib.sha256(ident.encode()).digest()[:12])


DECISIONS = _DecisionCollector()
REGISTRY.register(DECISIONS)
EXTRACT_FAILURES = Counter("dlpgate_extraction_failures_total", "Unscannable parts by reason", ["reason"],
                           registry=REGISTRY)
BYTES_RECEIVED = Counter("dlpgate_bytes_received_total", "Message bytes accepted", registry=REGISTRY)
BYTES_SCANNED = Counter("dlpgate_bytes_scanned_total", "Characters of extracted text scanned", registry=REGISTRY)

SCAN_SECONDS = Histogram("dlpgate_scan_seconds", "Scan + policy time per message", registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
EXTRACT_SECONDS = Histogram("dlpgate_extract_seconds", "Extraction time by format", ["format"], registry=REGISTRY,
                            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ACCEPT_LATENCY = Histogram("dlpgate_accept_latency_seconds", "End of DATA to final reply", registry=REGISTRY,
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30))
DELIVERY_LATENCY = Histogram("dlpgate_delivery_latency_seconds", "Arrival to upstream 250", registry=REGISTRY,
                             buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 600, 1800, 3600, 86400))

QUEUE = Gauge("dlpgate_messages", "Messages per state", ["state"], registry=REGISTRY)
OLDEST_HELD = Gauge("dlpgate_oldest_held_age_seconds", "Age of the oldest held message (0 if none)",
                    registry=REGISTRY)
SESSIONS = Gauge("dlpgate_smtp_sessions", "SMTP sessions open", registry=REGISTRY)
WORKERS_BUSY = Gauge("dlpgate_workers_busy", "Messages being judged in the worker pool", registry=REGISTRY)
UP = Gauge("dlpgate_up", "1 while listener, store and scheduler are alive", registry=REGISTRY)
UPSTREAM_UP = Gauge("dlpgate_upstream_up",
                    "1 while the upstream answers (last delivery attempt or probe), 0 while it does not",
                    registry=REGISTRY)
OLDEST_DEFERRED = Gauge("dlpgate_oldest_deferred_age_seconds", "Age of the oldest deferred message (0 if none)",
                        registry=REGISTRY)
