"""/metrics after a known traffic mix, through a real Gateway on loopback, parsed with
prometheus-client's own parser. Counters are process-global, so every check is a before/after delta."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import random
import re
import smtplib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dlpgate.config import ApproverRoute, MetricsConfig, Person, QuarantineConfig
from dlpgate.extract import extract_message
from dlpgate.extract.model import ExtractLimits
from dlpgate.server import Gateway
from tests.conftest import Sink, make_config
from tests.conftest import send_ok as send
from tests.test_deploy_support import my_number

Sample = tuple[str, frozenset[tuple[str, str]]]
BOUNCING = "nobody@example.com"


def message(sender: str, to: str, subject: str, body: str) -> bytes:
    text = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n")
    return text.encode("utf-8")


def held_message(seed: int = 1) -> tuple[bytes, list[str]]:
    rng = random.Random(seed)
    nums = [my_number(rng) for _ in range(3)]
    body = "職員の個人番号一覧です。\r\n" + "\r\n".join(f"職員{i} 個人番号 {n}" for i, n in enumerate(nums))
    return message("a@example.jp", "x@example.com", "名簿", body), nums


def scrape_text(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def health(port: int) -> tuple[int, str]:
    """/healthz: (HTTP status, the JSON body's status)."""
    code, body = scrape_text(port, "/healthz")
    return code, json.loads(body)["status"]


def parse(text: str) -> dict[Sample, float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)




async def wait_until(pred, timeout: float = 15.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def metered(tmp_path: Path, sink: Sink) -> AsyncIterator[Gateway]:
    """A gateway with its exporter on a free port; only 127.0.0.1 may relay (127.0.0.2 is refused)."""
    sink.handler.rcpt_codes[BOUNCING] = "550 5.1.1 No such user"
    base = make_config(tmp_path, sink.port)
    cfg = replace(base, smtp=replace(base.smtp, allowed_clients=("127.0.0.1/32",)),
                  metrics=MetricsConfig(listen="127.0.0.1:0"), quarantine=QuarantineConfig(notify=False),
                  approvers=(ApproverRoute(senders=("*@example.jp",), approvers=("boss@example.jp",)),),
                  # this process's own login is boss@: the CLI release below acts through the socket
                  people=(Person(pwd.getpwuid(os.getuid()).pw_name, ("boss@example.jp",)),))
    gw = Gateway(cfg, workers=1)
    await gw.start()
    # the first housekeeping pass runs as a task just after start(); until it has, /healthz says 503
    await wait_until(lambda: gw.last_housekeeping > 0, 5)
    yield gw
    await gw.stop(grace=2)


async def test_counters_move_by_the_traffic_mix(metered: Gateway, sink: Sink) -> None:
    gw = metered
    assert gw.metrics_server is not None
    mport, sport = gw.metrics_server.port, gw.smtp_port
    _, text = await asyncio.to_thread(scrape_text, mport)
    before = parse(text)

    clean = message("a@example.jp", "b@example.com", "hello", "nothing personal here")
    held, numbers = held_message()
    bounce = message("a@example.jp", "good@example.com", "two", "one of these does not exist")
    await asyncio.to_thread(send, sport, "a@example.jp", ["b@example.com"], clean)
    reply = await asyncio.to_thread(send, sport, "a@example.jp", ["x@example.com"], held)
    assert "held for approval" in reply
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        await asyncio.to_thread(send, sport, "a@example.jp", ["b@example.com"], clean, "127.0.0.2")
    assert refused.value.smtp_code == 554
    await asyncio.to_thread(send, sport, "a@example.jp", ["good@example.com", BOUNCING], bounce)

    # clean + the good recipient of the bounce message + the DSN back to a@example.jp
    got = await asyncio.to_thread(sink.handler.wait_for, 3, 15)
    assert sorted(r for m in got for r in m.rcpt_tos) == ["a@example.jp", "b@example.com", "good@example.com"]

    def now() -> dict[Sample, float]:
        return parse(scrape_text(mport)[1])

    after: dict[Sample, float] = {}

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    async def settled() -> None:  # the sink has the bytes a moment before the gateway books the 250
        nonlocal after
        for _ in range(300):
            after = await asyncio.to_thread(now)
            if delta("dlpgate_deliveries_total", result="delivered") >= 3:
                return
            await asyncio.sleep(0.05)

    await settled()
    await gw.housekeep_once()
    after = await asyncio.to_thread(now)

    assert delta("dlpgate_messages_received_total", result="accepted") == 3
    assert delta("dlpgate_messages_received_total", result="rejected") == 0
    assert delta("dlpgate_smtp_refused_total", reason="client_not_allowed") == 1
    assert delta("dlpgate_verdicts_total", verdict="clean") == 2
    assert delta("dlpgate_verdicts_total", verdict="hold") == 1
    assert delta("dlpgate_verdicts_total", verdict="reject") == 0
    assert delta("dlpgate_findings_total", detector="my_number", severity="high") == 1
    assert delta("dlpgate_deliveries_total", result="delivered") == 3
    assert delta("dlpgate_deliveries_total", result="bounced") == 1
    assert delta("dlpgate_deliveries_total", result="deferred") == 0
    assert delta("dlpgate_bytes_received_total") == len(clean) + len(held) + len(bounce)
    limits = ExtractLimits()
    chars = sum(len(p.text) for raw in (clean, held, bounce) for p in extract_message(raw, limits).parts)
    assert delta("dlpgate_bytes_scanned_total") == chars
    for hist in ("dlpgate_accept_latency_seconds", "dlpgate_scan_seconds"):
        assert delta(f"{hist}_count") == 3, hist
        assert delta(f"{hist}_bucket", le="+Inf") == 3, hist
    # observed once per attempt that delivered to someone: clean, the partial one, the DSN
    assert delta("dlpgate_delivery_latency_seconds_count") == 3
    assert delta("dlpgate_extract_seconds_count", format="message") == 3
    assert delta("dlpgate_extraction_failures_total", reason="corrupt") == 0

    # gauges are absolute: this gateway's store has one held message and nothing else waiting
    assert value(after, "dlpgate_messages", state="held") == 1
    assert value(after, "dlpgate_messages", state="delayed") == 0
    assert value(after, "dlpgate_messages", state="deferred") == 0
    assert 0 < value(after, "dlpgate_oldest_held_age_seconds") < 120
    assert value(after, "dlpgate_smtp_sessions") == 0
    assert value(after, "dlpgate_workers_busy") == 0
    assert value(after, "dlpgate_up") == 1

    # bounded labels: no address, subject or identifier anywhere in the exposition
    _, text = await asyncio.to_thread(scrape_text, mport)
    assert "@" not in text and "名簿" not in text
    assert not any(n in text for n in numbers)
    label_values = {v for _, labels in parse(text) for k, v in labels if k != "le"}
    assert label_values and not any(re.search(r"\d{5}", v) for v in label_values)


async def test_release_from_the_cli_is_counted(metered: Gateway, sink: Sink) -> None:
    from dlpgate.cli import main as cli_main

    gw = metered
    assert gw.metrics_server is not None
    before = parse((await asyncio.to_thread(scrape_text, gw.metrics_server.port))[1])
    held, _ = held_message(seed=2)
    reply = await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["x@example.com"], held)
    msg_id = re.search(r"queued as (\S+),", reply).group(1)  # type: ignore[union-attr]
    cfg_file = Path(gw.config.store_path).parent / "dlpgate.toml"
    cfg_file.write_text(f'[store]\npath = "{gw.config.store_path}"\n'
                        '[[approvers]]\nsenders = ["*@example.jp"]\napprovers = ["boss@example.jp"]\n')
    rc = await asyncio.to_thread(cli_main, ["quarantine", "release", msg_id, "--approver", "boss@example.jp",
                                            "--config", str(cfg_file)])
    assert rc == 0
    await asyncio.to_thread(sink.handler.wait_for, 1, 15)
    await gw.housekeep_once()
    after = parse((await asyncio.to_thread(scrape_text, gw.metrics_server.port))[1])
    from dlpgate.metrics import store_label

    store = store_label("", str(Path(gw.config.store_path).resolve()), gw.hostname)
    key = ("dlpgate_decisions_total", frozenset({("decision", "released"), ("store", store)}))
    assert after.get(key, 0.0) - before.get(key, 0.0) == 1


def test_store_label_is_shared_by_a_cluster_and_hides_the_password() -> None:
    from dlpgate.metrics import store_label

    a = store_label("postgresql://gw:secret@db.example.jp:5432/dlpgate", "/var/spool/a", "node-a")
    b = store_label("postgresql://gw:other@db.example.jp:5432/dlpgate?sslmode=require", "/srv/b", "node-b")
    assert a == b and len(a) == 12 and "secret" not in a
    assert store_label("postgresql://gw@db.example.jp/other", "", "") != a
    assert store_label("", "/q", "host-1") != store_label("", "/q", "host-2")


async def test_healthz_503_when_the_store_cannot_be_written(metered: Gateway) -> None:
    """The store directory is swapped for a plain file, then put back.

    chmod 0500 would not do: the suite may run as root, and root writes through permission bits
    (and a read-only bind mount needs privileges CI may not have). A file where the directory was
    makes every create below it fail with ENOTDIR for any user, and the open SQLite handle keeps
    pointing at the moved directory, so putting it back restores the same store.
    """
    gw = metered
    assert gw.metrics_server is not None and gw.store is not None
    port = gw.metrics_server.port
    assert await asyncio.to_thread(health, port) == (200, "ok")
    root = Path(gw.store.root)
    aside = root.with_name(root.name + ".aside")
    root.rename(aside)
    root.write_bytes(b"not a directory")
    try:
        code, report = await asyncio.to_thread(scrape_text, port, "/healthz")
        assert code == 503 and json.loads(report)["status"] == "unhealthy"
        assert json.loads(report)["checks"]["store"] == {"ok": False}
        samples = parse((await asyncio.to_thread(scrape_text, port))[1])
        assert value(samples, "dlpgate_up") == 0
    finally:
        root.unlink()
        aside.rename(root)
    assert await asyncio.to_thread(health, port) == (200, "ok")


async def test_healthz_503_when_the_listener_is_closed(metered: Gateway) -> None:
    gw = metered
    assert gw.metrics_server is not None and gw.server is not None
    assert (await asyncio.to_thread(scrape_text, gw.metrics_server.port, "/healthz"))[0] == 200
    gw.server.close()
    await gw.server.wait_closed()
    assert (await asyncio.to_thread(scrape_text, gw.metrics_server.port, "/healthz"))[0] == 503


async def test_unknown_path_is_404(metered: Gateway) -> None:
    assert metered.metrics_server is not None
    assert (await asyncio.to_thread(scrape_text, metered.metrics_server.port, "/nope"))[0] == 404

