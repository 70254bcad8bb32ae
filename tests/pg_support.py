"""A real PostgreSQL for the tests: its own cluster (initdb + pg_ctl) in a temporary directory,
listening on a free loopback port, run as the `postgres` OS user when the tests run as root (CI
does), stopped at the end of the session. Each test gets a database of its own (`pg_url`).

Never skipped: without Debian's `postgresql` installed the fixture fails, naming what is missing.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


def pg_bindir() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install -y postgresql (see .ci/run)")


class PgCluster:
    """One throwaway cluster. fsync and synchronous_commit stay on: the tests are about durability."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="dlpgate-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.user = "postgres" if self.as_postgres else pwd.getpwuid(os.geteuid()).pw_name
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._names = itertools.count(1)

    def _run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, cwd="/")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
                    "synchronous_commit = on\nfsync = on\nshared_buffers = 64MB\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def kill(self) -> None:
        """Stop the server the hard way (immediate: no checkpoint, crash recovery at the next start)."""
        self.stop("immediate")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(x.lower() in ("c.utf8", "c.utf-8") for x in out.split())


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    c = PgCluster()
    c.init()
    c.start()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    deadline = time.monotonic() + 60
    while True:  # a test that restarted the server may leave it starting up
        try:
            return pg_cluster.create_db()
        except Exception:
            if time.monotonic() > deadline:
                raise
            pg_cluster.start()
            time.sleep(0.5)
