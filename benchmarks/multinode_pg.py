"""Several gateways on one PostgreSQL, beside the SQLite engine, in one run (issue 20).

    .venv/bin/python benchmarks/multinode_pg.py throughput [--messages 3000] [--clients 24] [--size 10000]
    .venv/bin/python benchmarks/multinode_pg.py claims [--rows 1000 1000000]
    .venv/bin/python benchmarks/multinode_pg.py chaos [--messages 20000]

throughput: accept and end-to-end rates of 1 SQLite node, then 1, 2 and 3 nodes on one PostgreSQL
  (delay 0, clients spread over the nodes, a sink counting what arrives); per message: SQL
  statements (pg_stat_statements), WAL bytes and PostgreSQL CPU seconds, to size a database server,
  and the gateways' own CPU (every process of each, the deliverer and judging workers included).
  `--queries` lists each case's statements by query (what grows with the number of nodes).
claims: cost of one claim (10 due rows among 1,000 queued) after N messages went through the hot
  table (inserted, then moved to history as delivered): a churned queue must not claim slower.
  The whole claim transaction (its COMMIT waits for the WAL fsync: noisy on a shared disk) and the
  claim's SELECT alone (execution time and buffers touched: the figure that shows bloat).
chaos: the test suite's kill -9 scenario at full size: three nodes, `--messages` across them, one
  node killed -9 in the middle and restarted; checks every acknowledged message arrived and that
  duplicates are only recovered (mid-delivery) messages.

A throwaway cluster (tests/pg_support.py) with fsync and synchronous_commit on; the machine is
shared and noisy: compare figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import psycopg  # noqa: E402
from e2e_throughput import free_port, load, proc_cpu, run_sink  # noqa: E402

from tests.pg_support import PgCluster  # noqa: E402

DLPGATE = [sys.executable, "-m", "dlpgate.cli"]


def config(tmp: Path, name: str, url: str, upstream: int, port: int) -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    store = f'path = "{(d / "store").as_posix()}"\n' + (f'url = "{url}"\nnode = "{name}"\nlease_seconds = 10\n'
                                                         if url else "")
    cfg = d / "dlpgate.toml"
    cfg.write_text(f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "gw-{name}.test"
[relay]
upstream = "127.0.0.1:{upstream}"
tls = "off"
concurrency = 16
[delay]
seconds = 0
[store]
{store}[metrics]
listen = ""
[policy]
internal_domains = ["example.jp"]
[audit]
# one signing key for the cluster, as docs/multinode.md asks of every deployment
key = "{(tmp / 'audit.key').as_posix()}"
""")
    return cfg


def start(cfg: Path, port: int) -> subprocess.Popen[bytes]:
    import smtplib

    log = open(cfg.parent / "gateway.log", "ab")  # noqa: SIM115
    p = subprocess.Popen([*DLPGATE, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as c:
                c.noop()
                return p
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gateway did not start: {(cfg.parent / 'gateway.log').read_text()[-2000:]}")


def pg_cpu(cluster: PgCluster) -> float:
    """CPU seconds of the postmaster and all its backends so far."""
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return 0.0
    total = proc_cpu(pid)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                st = (d / "stat").read_text()
            except OSError:
                continue
            if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                total += proc_cpu(int(d.name))
    return total


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and all their descendants alive now (a gateway, its
    forkserver, deliverer and judging workers)."""
    return sum(tree_cpu_by_name(pids).values())


def tree_cpu_by_name(pids: list[int]) -> dict[str, float]:
    """`tree_cpu` by process name (the gateway, dlpgate-deliver, the judging workers...)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out: dict[str, float] = {}
    todo, seen = list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            name = (Path("/proc") / str(pid) / "comm").read_text().strip()
        except OSError:
            name = "?"
        out[name] = out.get(name, 0.0) + proc_cpu(pid)
        todo += children.get(pid, [])
    return out


def top_queries(url: str, total: int, n: int = 12) -> list[str]:
    """The statements this database ran, most frequent first, per message."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("SELECT calls, total_exec_time, query FROM pg_stat_statements"
                         " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                         " ORDER BY calls DESC LIMIT %s", (n,)).fetchall()
    return [f"  {calls / total:6.3f}/msg {t / max(1, calls):7.3f} ms  {' '.join(q.split())[:110]}"
            for calls, t, q in rows]


def pg_counters(url: str) -> tuple[int, int, int]:
    """(statements, WAL bytes, commits) so far."""
    with psycopg.connect(url, autocommit=True) as c:
        # COMMIT sent in a pipeline (extended protocol) is not always counted by pg_stat_statements:
        # every BEGIN ends in one COMMIT or ROLLBACK, so those are counted as BEGINs, twice
        calls = c.execute("SELECT coalesce(sum(calls) FILTER (WHERE query NOT IN ('COMMIT', 'ROLLBACK')), 0)"
                          " + coalesce(sum(calls) FILTER (WHERE query = 'BEGIN'), 0) FROM pg_stat_statements"
                          ).fetchone()[0]  # type: ignore[index]
        wal = c.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]  # type: ignore[index]
        commits = c.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                            ).fetchone()[0]  # type: ignore[index]
    return int(calls), int(wal), int(commits)


def run_case(tmp: Path, label: str, url: str, nodes: int, args: argparse.Namespace,
             cluster: PgCluster | None) -> dict[str, Any]:
    counter = multiprocessing.Value("l", 0)
    up = free_port()
    sink = multiprocessing.Process(target=run_sink, args=(up, counter), daemon=True)
    sink.start()
    procs, ports = [], []
    try:
        for i in range(nodes):
            port = free_port()
            procs.append(start(config(tmp / label, chr(ord("a") + i), url, up, port), port))
            ports.append(port)
        time.sleep(1)
        if url:  # the per-query figures of this case only (the totals are differences anyway)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
        before = pg_counters(url) if url else (0, 0, 0)
        cpu0 = pg_cpu(cluster) if cluster else 0.0
        node0 = tree_cpu_by_name([p.pid for p in procs])
        t0 = time.perf_counter()

        async def spread() -> tuple[float, list[float]]:
            share = args.messages // nodes
            res = await asyncio.gather(*(load(p, share, max(1, args.clients // nodes), args.size) for p in ports))
            return max(r[0] for r in res), [x for r in res for x in r[1]]

        accept_s, lat = asyncio.run(spread())
        total = (args.messages // nodes) * nodes
        deadline = time.monotonic() + 600
        while counter.value < total and time.monotonic() < deadline:
            time.sleep(0.02)
        e2e_s = time.perf_counter() - t0
        after = pg_counters(url) if url else (0, 0, 0)
        cpu = (pg_cpu(cluster) - cpu0) if cluster else 0.0
        by_name = tree_cpu_by_name([p.pid for p in procs])
        node_cpu = sum(by_name.values()) - sum(node0.values())
        if args.queries:
            print(f"{label}: node CPU ms/msg by process", {k: round(1000 * (v - node0.get(k, 0.0)) / total, 2)
                                                          for k, v in sorted(by_name.items())}, flush=True)
        if url and args.queries:
            print(f"{label}: statements by query", *top_queries(url, total), sep="\n", flush=True)
        lat.sort()
        return {"case": label, "nodes": nodes, "messages": total, "accept/s": total / accept_s,
                "e2e/s": total / e2e_s, "p50 ms": 1000 * lat[len(lat) // 2], "p99 ms": 1000 * lat[int(len(lat) * .99)],
                "stmts/msg": (after[0] - before[0]) / total, "WAL B/msg": (after[1] - before[1]) / total,
                "commits/msg": (after[2] - before[2]) / total, "pg cpu ms/msg": 1000 * cpu / total,
                "node cpu ms/msg": 1000 * node_cpu / total}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        sink.kill()


def cluster_with_stats() -> PgCluster:
    c = PgCluster()
    c.init()
    with open(c.data / "postgresql.conf", "a") as f:
        f.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n")
    c.start()
    return c


def new_db(c: PgCluster) -> str:
    url = c.create_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return url


def throughput(args: argparse.Namespace) -> None:
    c = cluster_with_stats()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="dlpgate-mn-") as tmp:
            for rep in range(args.repeat):
                if "sqlite" in args.cases:
                    rows.append(run_case(Path(tmp) / f"r{rep}", "sqlite", "", 1, args, None))
                for n in (int(x[2:]) for x in args.cases if x.startswith("pg")):
                    rows.append(run_case(Path(tmp) / f"r{rep}", f"pg{n}", new_db(c), n, args, c))
    finally:
        c.cleanup()
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    if "sqlite" not in args.cases:
        return
    sq = statistics.median(r["e2e/s"] for r in rows if r["case"] == "sqlite")
    for n in (int(x[2:]) for x in args.cases if x.startswith("pg")):
        pg = statistics.median(r["e2e/s"] for r in rows if r["case"] == f"pg{n}")
        print(f"pg{n} e2e / sqlite e2e = {pg / sq:.2f}")


def claims(args: argparse.Namespace) -> None:
    from dlpgate.store.postgres import PgStore

    c = PgCluster()
    c.init()
    c.start()
    try:
        with tempfile.TemporaryDirectory(prefix="dlpgate-cl-") as tmp:
            for n in args.rows:
                url = c.create_db()
                st = PgStore(url, Path(tmp) / str(n), node="bench")
                with psycopg.connect(url, autocommit=True) as conn:
                    t = time.perf_counter()
                    step = 50_000
                    for lo in range(0, n, step):  # churn: messages through the hot table, then to history
                        hi = min(n, lo + step)
                        conn.execute("INSERT INTO messages (id, state, sender, arrived, due_at, updated, spool)"
                                     " SELECT 'h' || g, 'delayed', 's@example.jp', g, g, g, 'db'"
                                     " FROM generate_series(%s::bigint, %s::bigint) g", (lo, hi - 1))
                        conn.execute("UPDATE messages SET state = 'delivered', due_at = NULL WHERE state = 'delayed'")
                        conn.execute("WITH moved AS (DELETE FROM messages WHERE state = 'delivered' RETURNING *)"
                                     " INSERT INTO messages_history SELECT * FROM moved")
                    churn = time.perf_counter() - t
                    now = time.time()
                    conn.execute("INSERT INTO messages (id, state, sender, arrived, due_at, updated, spool)"
                                 " SELECT 'q' || g, 'delayed', 's@example.jp', %s, %s + g, %s, 'db'"
                                 " FROM generate_series(1, 1000) g", (now, now - 2000, now))
                    conn.execute("INSERT INTO recipients (msg_id, rcpt, pos) SELECT 'q' || g, 'r@example.com', 0"
                                 " FROM generate_series(1, 1000) g")
                    dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'messages'"
                                        ).fetchone()[0]  # type: ignore[index]

                def plan(url: str = url) -> str:
                    """The claim's candidate scan alone (the `cand` part of PgStore._CLAIM): execution
                    time and shared buffers it touched."""
                    with psycopg.connect(url, autocommit=True) as conn:
                        lines = [r[0] for r in conn.execute(
                            "EXPLAIN (ANALYZE, BUFFERS) SELECT id, size, due_at FROM messages WHERE state IN"
                            " ('delayed','deferred','released') AND due_at <= %s AND (lease_node IS NULL"
                            " OR lease_node = 'bench' OR due_at <= %s) ORDER BY due_at LIMIT 10"
                            " FOR UPDATE SKIP LOCKED", (time.time(), time.time() - 0.3))]
                    bufs = next((x.split("Buffers:")[1].strip() for x in lines if "Buffers:" in x), "?")
                    ex = next((x.split(":")[1].strip() for x in lines if x.startswith("Execution Time")), "?")
                    return f"claim SELECT {ex}, buffers {bufs}"

                def measure(st: PgStore = st) -> list[float]:
                    times = []
                    for _ in range(50):
                        t = time.perf_counter()
                        got = st.claim_due(10)
                        times.append(time.perf_counter() - t)
                        st.recover()  # back in the queue: every claim sees the same 1,000
                        assert len(got) == 10
                    return sorted(times)

                times = measure()
                print(f"after {n:>9,} messages, at once:      claim of 10 p50 {1000 * times[25]:.2f} ms, p90 "
                      f"{1000 * times[45]:.2f} ms (churn {churn:.0f} s, dead rows in the hot table {dead}); {plan()}")
                t = time.perf_counter()
                with psycopg.connect(url, autocommit=True) as conn:  # what autovacuum does (threshold 1,000)
                    conn.execute("VACUUM (ANALYZE) messages")
                vac = time.perf_counter() - t
                times = measure()
                print(f"after {n:>9,} messages, vacuumed:     claim of 10 p50 {1000 * times[25]:.2f} ms, p90 "
                      f"{1000 * times[45]:.2f} ms (vacuum of the hot table {vac:.1f} s); {plan()}")
                st.close()
    finally:
        c.cleanup()


def chaos(args: argparse.Namespace) -> None:
    """The kill -9 test at full size (tests/test_multinode_pg.py logic, bigger numbers)."""
    import collections
    import signal

    import pytest  # noqa: F401 - tests.pg_support's fixtures import it

    from tests.conftest import Sink
    from tests.test_multinode_pg import GW_ID, PARTNER, Load, Node, audit_ids, numbers_in, verify, wait

    c = PgCluster()
    c.init()
    c.start()
    sink = Sink()
    sink.start()
    try:
        with tempfile.TemporaryDirectory(prefix="dlpgate-chaos-") as tmp:
            url = c.create_db()
            nodes = [Node(Path(tmp), n, url, sink.port, delay=0.5, lease=5) for n in ("a", "b", "c")]
            for nd in nodes:
                nd.start()
            t0 = time.perf_counter()
            ld = Load(nodes, args.messages, threads=12)
            ld.start()
            wait(lambda: len(ld.acked) >= args.messages // 2, 3600, "half acknowledged")
            assert nodes[1].proc is not None
            os.kill(nodes[1].proc.pid, signal.SIGKILL)
            nodes[1].proc.wait(30)
            time.sleep(2)
            nodes[1].start()
            ld.join(3600)
            acked = set(ld.acked)
            wait(lambda: set(numbers_in(sink)) >= acked, 1800, "every acknowledged message delivered")
            el = time.perf_counter() - t0
            ids = collections.Counter(GW_ID.search(m.data).group(1).decode()  # type: ignore[union-attr]
                                      for m in list(sink.handler.messages) if PARTNER in m.rcpt_tos)
            twice = {i for i, k in ids.items() if k > 1}
            recovered = audit_ids(url, Path(tmp), "recovered")
            ok, text = verify(url, Path(tmp))
            print(f"{len(acked)} acknowledged, all delivered in {el:.0f} s ({len(acked) / el:.0f} msg/s);"
                  f" delivered twice: {len(twice)}, of which recovered mid-delivery: {len(twice & recovered)};"
                  f" replies seen: {dict(ld.codes)}; audit: {text}")
            for nd in nodes:
                nd.stop()
            assert twice <= recovered and ok
    finally:
        sink.stop()
        c.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--size", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--cases", nargs="+", default=["sqlite", "pg1", "pg2", "pg3"],
                   choices=["sqlite", "pg1", "pg2", "pg3"])
    p.add_argument("--queries", action="store_true", help="print each PostgreSQL case's statements by query")
    p = sub.add_parser("claims")
    p.add_argument("--rows", type=int, nargs="+", default=[1000, 1_000_000])
    p = sub.add_parser("chaos")
    p.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args()
    {"throughput": throughput, "claims": claims, "chaos": chaos}[args.what](args)


if __name__ == "__main__":
    main()
