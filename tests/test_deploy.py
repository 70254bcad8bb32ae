"""The deploy/ kit stays true to the code: configs load, every metric a dashboard or alert names
exists, the systemd unit keeps its hardening, the Postfix snippets point at the configured ports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dlpgate import metrics
from dlpgate.config import load_config, parse_hostport

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC_TOKEN = re.compile(r"\b(dlpgate_[a-z0-9_]+)")


def exposed_metric_names() -> set[str]:
    """Every series name the exporter can produce (a labelled family with no child yet included)."""
    names: set[str] = set()
    for fam in metrics.REGISTRY.collect():
        if fam.type == "counter":
            names |= {fam.name + "_total", fam.name + "_created"}
        elif fam.type == "histogram":
            names |= {fam.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(fam.name)
    return names


def unit_file(path: Path) -> dict[str, list[str]]:
    """systemd unit -> {"Section.Key": [values...]} (keys may repeat, which configparser refuses)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def test_sample_config_loads_with_production_values() -> None:
    cfg = load_config(DEPLOY / "dlpgate.toml")
    assert cfg.store_path == Path("/var/lib/dlpgate/store")
    assert str(cfg.rules_path) == "/etc/dlpgate/rules"
    assert cfg.log.format == "json"
    assert cfg.approvers and all(r.approvers for r in cfg.approvers)
    assert "0.0.0.0/0" not in cfg.smtp.allowed_clients
    assert parse_hostport(cfg.relay.upstream, "relay.upstream") == ("127.0.0.1", 10026)


def test_container_config_loads_and_listens_on_all_interfaces() -> None:
    cfg = load_config(DEPLOY / "container.toml")
    assert parse_hostport(cfg.smtp.listen, "smtp.listen")[0] == "0.0.0.0"
    assert parse_hostport(cfg.metrics.listen, "metrics.listen") == ("0.0.0.0", 9325)
    assert cfg.store_path == Path("/var/lib/dlpgate/store")


def test_systemd_unit_is_hardened_and_runs_the_sample_config() -> None:
    u = unit_file(DEPLOY / "dlpgate.service")
    assert u["Service.User"] == ["dlpgate"] or u.get("Service.DynamicUser") == ["yes"]
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
                       "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes", "UMask": "0077"}.items():
        assert u.get(f"Service.{key}") == [value], key
    assert u["Service.CapabilityBoundingSet"] == [""]
    store = load_config(DEPLOY / "dlpgate.toml").store_path
    writable = [Path(p) for v in u["Service.ReadWritePaths"] for p in v.split()]
    assert any(store == w or w in store.parents for w in writable), "store not in ReadWritePaths"
    assert u["Service.StateDirectory"] == [store.parent.name]
    start = u["Service.ExecStart"][0]
    assert start.endswith("dlpgate serve --config /etc/dlpgate/dlpgate.toml")
    reload = u["Service.ExecReload"]
    assert "rules check" in reload[0] and reload[-1] == "/bin/kill -HUP $MAINPID"
    assert u["Service.KillSignal"] == ["SIGTERM"]


def test_grafana_dashboard_parses_and_queries_only_real_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {m for e in exprs for m in METRIC_TOKEN.findall(e)}
    assert used - exposed_metric_names() == set()
    # the four views: throughput, verdict mix, held queue, latencies
    for needed in ("dlpgate_messages_received_total", "dlpgate_verdicts_total", "dlpgate_messages",
                   "dlpgate_oldest_held_age_seconds", "dlpgate_accept_latency_seconds_bucket",
                   "dlpgate_delivery_latency_seconds_bucket", "dlpgate_scan_seconds_bucket"):
        assert needed in used, needed
    # every panel inside the 24-column grid, no two overlapping
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine


def test_alert_rules_parse_and_use_real_metrics() -> None:
    doc = yaml.safe_load((DEPLOY / "alerts.yml").read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"DlpgateDown", "DlpgateHeldMailWaiting", "DlpgateDeferredQueueGrowing", "DlpgateDeliveryFailures",
            "DlpgateScanErrors"} <= names
    known = exposed_metric_names()
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info")
        assert r["annotations"]["summary"]
        assert set(METRIC_TOKEN.findall(r["expr"])) <= known, r["alert"]
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]


def test_prometheus_scrapes_the_configured_metrics_port() -> None:
    doc = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in doc["scrape_configs"] if j["job_name"] == "dlpgate")
    target = job["static_configs"][0]["targets"][0]
    assert target == load_config(DEPLOY / "dlpgate.toml").metrics.listen
    assert job["metrics_path"] == "/metrics"
    assert any(f.endswith("dlpgate-alerts.yml") for f in doc["rule_files"])


def test_postfix_snippets_point_at_the_sample_config_ports() -> None:
    cfg = load_config(DEPLOY / "dlpgate.toml")
    lhost, lport = parse_hostport(cfg.smtp.listen, "smtp.listen")
    uhost, uport = parse_hostport(cfg.relay.upstream, "relay.upstream")
    listen, upstream = f"[{lhost}]:{lport}", f"{uhost}:{uport}"
    main_b = (DEPLOY / "postfix/content-filter/main.cf").read_text(encoding="utf-8")
    master_b = (DEPLOY / "postfix/content-filter/master.cf").read_text(encoding="utf-8")
    assert re.search(rf"^content_filter = dlpgate:{re.escape(listen)}$", main_b, re.M)
    # the re-injection listener dlpgate delivers to, with the filter switched off (no loop)
    block = re.search(rf"^{re.escape(upstream)} inet .*?(?=^\S|\Z)", master_b, re.M | re.S)
    assert block is not None
    assert re.search(r"^\s+-o content_filter=$", block.group(0), re.M)
    assert re.search(r"^dlpgate\s+unix\s+.*\ssmtp$", master_b, re.M)
    main_a = (DEPLOY / "postfix/relayhost/main.cf").read_text(encoding="utf-8")
    assert re.search(rf"^relayhost = {re.escape(listen)}$", main_a, re.M)


@pytest.mark.parametrize("copied", ["rules", "deploy/container.toml"])
def test_dockerfile_copies_what_exists_and_runs_unprivileged(copied: str) -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert (DEPLOY.parent / copied).exists()
    assert re.search(rf"^COPY {re.escape(copied)} ", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "/healthz" in text
    assert re.search(r'^CMD \["serve", "--config", "/etc/dlpgate/dlpgate.toml"\]', text, re.M)


def test_reinjection_listener_takes_every_upstream_connection() -> None:
    """dlpgate keeps [relay] concurrency connections to Postfix's re-injection smtpd; with fewer
    smtpd processes than that, the extra connections would wait for one to free up."""
    from dlpgate.config import RelayConfig

    master = (Path(__file__).parent.parent / "deploy/postfix/content-filter/master.cf").read_text()
    line = next(x for x in master.splitlines() if x.startswith("127.0.0.1:10026"))
    assert int(line.split()[6]) >= RelayConfig().concurrency  # service type private unpriv chroot wakeup maxproc
