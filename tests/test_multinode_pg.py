"""Three real `dlpgate serve` processes on one PostgreSQL database (a real server).

- mail sent to all three arrives once each; a message held on node A is released with node B's
  CLI and delivered exactly once; the audit chain verifies;
- one node killed -9 in the middle of a load and restarted: every acknowledged message is
  delivered, and a message goes out twice only if it was caught mid-delivery (it is then audited
  as recovered);
- PostgreSQL stopped and started under load: clients get 4xx while it is gone, never a 250 for an
  uncommitted message; the nodes reconnect by themselves and nothing acknowledged is lost.

The counts are scaled down for `make test`; benchmarks/multinode_pg.py runs the 20,000-message
version.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from dlpgate.store.postgres import PgStore
from tests.conftest import Sink, free_port
from tests.pg_support import PgCluster, pg_cluster, pg_url  # noqa: F401 - fixtures
from tests.test_approval_support import mail_with_numbers, my_login, run_cli, synthetic_numbers
from tests.test_crash import DLPGATE

SENDER = "tanaka@soumu.example.jp"
PARTNER = "partner@example.com"
GW_ID = re.compile(rb"with ESMTP id ([0-9a-z]+)")


def node_config(tmp: Path, name: str, url: str, upstream: int, *, delay: float = 0, lease: float = 3) -> tuple[Path, int]:
    port = free_port()
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "dlpgate.toml"
    cfg.write_text(f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "gw-{name}.test"
[relay]
upstream = "127.0.0.1:{upstream}"
tls = "off"
concurrency = 4
retry_initial = 0.3
retry_max = 1.0
[delay]
seconds = {delay}
[store]
path = "{(d / 'store').as_posix()}"
url = "{url}"
node = "{name}"
lease_seconds = {lease}
[metrics]
listen = ""
[policy]
internal_domains = ["example.jp"]
[quarantine]
language = "en"
[control]
admins = ["{my_login()}"]
[audit]
# one signing key for the cluster: every gateway appends to the same chain
key = "{(tmp / 'audit.key').as_posix()}"
[[approvers]]
senders = ["*@soumu.example.jp"]
approvers = ["kacho@example.jp"]
[[people]]
login = "{my_login()}"
addresses = ["kacho@example.jp"]
""")
    return cfg, port


class Node:
    def __init__(self, tmp: Path, name: str, url: str, upstream: int, **kw: Any) -> None:
        self.name = name
        self.cfg, self.port = node_config(tmp, name, url, upstream, **kw)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.cfg.parent / "gateway.log", "ab")  # noqa: SIM115 - a pipe nobody drains would stall it
        self.proc = subprocess.Popen([*DLPGATE, "serve", "--config", str(self.cfg)], stdout=subprocess.DEVNULL,
                                     stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=2) as c:
                    if c.noop()[0] == 250:
                        return
            except (OSError, smtplib.SMTPException):
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited: {self.log()[-2000:]}")
            time.sleep(0.1)
        raise AssertionError(f"node {self.name} did not start: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.cfg.parent / "gateway.log").read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def plain(n: int) -> bytes:
    return (f"From: {SENDER}\r\nTo: {PARTNER}\r\nSubject: n{n}\r\nMessage-ID: <m{n}@test>\r\n\r\n"
            f"body {n}\r\n").encode()


def _queue_rows(url: str) -> list[tuple[Any, ...]]:
    """The messages not yet finished (state, lease, due, attempts): a failed delivery check says
    where they stand."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as c:
            return c.execute("SELECT id, state, prev_state, lease_node, lease_until, due_at, attempts FROM messages"
                             " ORDER BY due_at LIMIT 20").fetchall()
    except Exception as e:  # noqa: BLE001 - a diagnostic: never hide the failure it explains
        return [("unreadable", repr(e))]


def numbers_in(sink: Sink) -> collections.Counter[int]:
    out: collections.Counter[int] = collections.Counter()
    for m in list(sink.handler.messages):
        hit = re.search(rb"Message-ID: <m(\d+)@test>", m.data)
        if hit and PARTNER in m.rcpt_tos:
            out[int(hit.group(1))] += 1
    return out


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout} s")
        time.sleep(0.1)


class Load:
    """Clients spread over the nodes; a message is retried (on the next node) until it gets 250.
    Records every reply code seen."""

    def __init__(self, nodes: list[Node], total: int, threads: int = 6) -> None:
        self.nodes, self.threads = nodes, threads
        self.todo = collections.deque(range(total))
        self.acked: set[int] = set()
        self.codes: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._ts: list[threading.Thread] = []

    def _worker(self, k: int) -> None:
        turn = k
        while not self.stop.is_set():
            with self.lock:
                if not self.todo:
                    return
                n = self.todo.popleft()
            node = self.nodes[turn % len(self.nodes)]
            turn += 1
            try:
                with smtplib.SMTP("127.0.0.1", node.port, timeout=20) as c:
                    c.sendmail(SENDER, [PARTNER], plain(n))
                with self.lock:
                    self.acked.add(n)
                    self.codes[250] += 1
            except smtplib.SMTPResponseException as e:
                with self.lock:
                    self.codes[e.smtp_code] += 1
                    self.todo.append(n)
                time.sleep(0.05)
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.codes[0] += 1
                    self.todo.append(n)
                time.sleep(0.05)

    def start(self) -> None:
        self._ts = [threading.Thread(target=self._worker, args=(k,), daemon=True) for k in range(self.threads)]
        for t in self._ts:
            t.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._ts:
            t.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._ts), "load did not finish"


def audit_ids(url: str, tmp: Path, event: str) -> set[str]:
    st = PgStore(url, tmp / "probe", node="probe")
    try:
        return {e.msg_id for e in st.audit_entries() if e.event == event}
    finally:
        st.close()


def verify(url: str, tmp: Path) -> tuple[bool, str]:
    st = PgStore(url, tmp / "probe", node="probe")
    try:
        return st.verify_audit()
    finally:
        st.close()


def test_three_nodes_hold_on_a_released_through_b(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    sink = Sink()
    sink.start()
    nodes = [Node(tmp_path, name, pg_url, sink.port) for name in ("a", "b", "c")]
    try:
        for nd in nodes:
            nd.start()
        for i, nd in enumerate(nodes):  # mail to all three
            for k in range(5):
                n = i * 100 + k
                with smtplib.SMTP("127.0.0.1", nd.port, timeout=30) as c:
                    c.sendmail(SENDER, [PARTNER], plain(n))
        want = {i * 100 + k for i in range(3) for k in range(5)}
        wait(lambda: set(numbers_in(sink)) >= want, 60, "plain mail delivered")
        # held on node A
        numbers = synthetic_numbers(3, 11)
        raw = mail_with_numbers(SENDER, [PARTNER], numbers, subject="held-on-a")
        with smtplib.SMTP("127.0.0.1", nodes[0].port, timeout=30) as c:
            c.sendmail(SENDER, [PARTNER], raw)
        code, out, err = run_cli(["quarantine", "list", "--json", "--config", str(nodes[1].cfg)])
        assert code == 0, err
        assert '"state": "held"' in out, out
        mid = re.search(r'"id": "([0-9a-z]+)"', out).group(1)  # type: ignore[union-attr]
        # released with node B's CLI
        code, out, err = run_cli(["quarantine", "release", mid, "--approver", "kacho@example.jp",
                                  "--reason", "checked", "--config", str(nodes[1].cfg)])
        assert code == 0, err

        def held_copies() -> list[Any]:
            return [m for m in sink.handler.messages if PARTNER in m.rcpt_tos and b"held-on-a" in m.data]

        wait(held_copies, 30, "released message delivered")
        time.sleep(3)  # a second copy, if any node were to send one, would have come by now
        assert len(held_copies()) == 1
        assert max(numbers_in(sink).values()) == 1  # every plain message exactly once
        # B witnessed the cluster's chain head at the decision: its check covers signatures and a cut tail
        code, out, err = run_cli(["audit", "verify", "--config", str(nodes[1].cfg)])
        assert code == 0, (out, err)
        assert "signed by key" in out and "witnessed heads" in out, out
        ok, text = verify(pg_url, tmp_path)
        assert ok, text
    finally:
        for nd in nodes:
            nd.stop()
        sink.stop()


def test_node_killed_mid_load_loses_nothing(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    total = 240
    sink = Sink()
    sink.start()
    nodes = [Node(tmp_path, name, pg_url, sink.port, delay=0.5) for name in ("a", "b", "c")]
    try:
        for nd in nodes:
            nd.start()
        load = Load(nodes, total)
        load.start()
        wait(lambda: len(load.acked) >= total // 3, 120, "a third acknowledged")
        nodes[1].kill9()  # mid-load: b has messages accepted, claimed and in flight
        killed_at = time.monotonic()
        wait(lambda: len(load.acked) >= 2 * total // 3, 120, "two thirds acknowledged")
        nodes[1].start()
        load.join(180)
        assert len(load.acked) == total
        acked = set(load.acked)
        wait(lambda: set(numbers_in(sink)) >= acked, 120, "every acknowledged message delivered")
        time.sleep(1)
        # duplicates only of messages caught mid-delivery: each such gateway id was recovered
        ids = collections.Counter(GW_ID.search(m.data).group(1).decode()  # type: ignore[union-attr]
                                  for m in list(sink.handler.messages) if PARTNER in m.rcpt_tos)
        twice = {i for i, k in ids.items() if k > 1}
        recovered = audit_ids(pg_url, tmp_path, "recovered")
        assert twice <= recovered, (twice - recovered)
        assert len(twice) <= 4 * 2, twice  # bounded by what one node had in flight (concurrency 4)
        assert time.monotonic() - killed_at < 400
        ok, text = verify(pg_url, tmp_path)
        assert ok, text
    finally:
        for nd in nodes:
            nd.stop()
        sink.stop()


def test_postgres_restart_under_load(pg_cluster: PgCluster, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    total = 150
    sink = Sink()
    sink.start()
    nodes = [Node(tmp_path, name, pg_url, sink.port) for name in ("a", "b")]
    try:
        for nd in nodes:
            nd.start()
        load = Load(nodes, total, threads=4)
        load.start()
        wait(lambda: len(load.acked) >= total // 4, 120, "a quarter acknowledged")
        pg_cluster.stop("fast")
        try:
            # while it is gone: a temporary refusal, never 250 (nothing can be committed)
            with smtplib.SMTP("127.0.0.1", nodes[0].port, timeout=30) as c:
                c.ehlo("client.test")
                code, _ = c.mail(SENDER)
                if code == 250:
                    c.rcpt(PARTNER)
                    code, _ = c.data(plain(99_999))
            assert 400 <= code < 500, code
            time.sleep(1)
        finally:
            pg_cluster.start()
        load.join(240)
        assert len(load.acked) == total
        assert not any(500 <= k < 600 for k in load.codes), load.codes  # never a permanent refusal
        acked = set(load.acked)
        try:
            wait(lambda: set(numbers_in(sink)) >= acked, 120, "every acknowledged message delivered")
        except AssertionError as e:  # say where the missing ones are: the queue's rows and the nodes' logs
            raise AssertionError(f"{e}: {len(acked - set(numbers_in(sink)))} missing; queue: "
                                 f"{_queue_rows(pg_url)}; " + " | ".join(f"node {nd.name}: {nd.log()[-3000:]}"
                                                                        for nd in nodes)) from None
        assert 99_999 not in numbers_in(sink)
        ok, text = verify(pg_url, tmp_path)
        assert ok, text
    finally:
        for nd in nodes:
            nd.stop()
        sink.stop()
