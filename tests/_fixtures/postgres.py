"""A throwaway PostgreSQL cluster for the integration tests.

``postgres_server`` (session): initdb + pg_ctl from Debian's packages in a temp
dir, listening on 127.0.0.1 on a free port, password (scram) authentication
only, stopped and deleted at the end. ``postgres_url``: the URL of a role with
a password. ``fresh_postgres_url``: a new empty database per test.
`CommitCutProxy`: a TCP proxy that makes the server's answer to a COMMIT get lost.
Skips when the server binaries are not installed (CI installs them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROLE = "seedlock"
PASSWORD = "pg-Secr3t-9f2b7c"  # recognizable: secret tests search for it
ADMIN_PASSWORD = "pg-Admin-4d1e8a"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``stop()``/``start()`` for outage tests."""

    bindir: Path
    datadir: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{ROLE}"

    def admin_url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/{db}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir}"
        self._pg_ctl("-w", "-t", "30", "-l", str(self.datadir / "server.log"), "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-t", "30", "-m", mode, "stop")

    def create_database(self) -> str:
        """A new empty database owned by the test role; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def throwaway_cluster(
    bindir: Path, *, durable: bool = False, prefix: str = "seedlock-pg-"
) -> Iterator[PostgresServer]:
    """initdb + start a cluster in a temp dir with the test role; stop and delete it after.

    ``durable=False`` (tests) turns fsync and synchronous commit off;
    ``durable=True`` (benchmarks) keeps a stock server's durability.
    """
    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    as_user: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres user.
        shutil.chown(tmp, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    datadir = tmp / "data"
    pwfile = tmp / "pw"
    pwfile.write_text(ADMIN_PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres",
         "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    server = PostgresServer(bindir, datadir, _free_port(), as_user)
    with (datadir / "postgresql.conf").open("a") as f:
        if not durable:
            # Throwaway cluster: durability is not the point, speed is.
            f.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        f.write("max_connections = 200\n")
    server.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(server.admin_url(), autocommit=True) as conn:
                    conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
                    conn.execute(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg")
    with throwaway_cluster(bindir) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL (with password) of the test role's database on the throwaway cluster."""
    return postgres_server.url


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> str:
    """A new empty database for one test."""
    return postgres_server.create_database()


class CommitCutProxy:
    """A TCP proxy on 127.0.0.1 in front of a PostgreSQL server that can lose
    the answer to a COMMIT.

    While ``cuts`` is above zero, the next COMMIT a client sends is passed
    to the server, the server's answer is awaited (the transaction is then
    committed) and both connections are closed instead of passing it on:
    the client sees its connection die and cannot know the commit happened.
    ``cut`` counts the commits whose answer was dropped.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cuts = 0
        self.cut = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, server_url: str) -> str:
        """``server_url`` pointed at this proxy (plain TCP: the proxy reads the bytes)."""
        return server_url.replace(f":{self.target_port}/", f":{self.port}/") + "?sslmode=disable"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts <= 0:
                return False
            self.cuts -= 1
            return True

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.target_port))
        cutting = False
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        # Query ('Q') or Parse ('P') message text ends with a NUL.
                        if not cutting and b"COMMIT\x00" in data and self._take_cut():
                            cutting = True
                        server.sendall(data)
                    elif cutting and b"COMMIT\x00" in data:  # CommandComplete of the COMMIT
                        with self._lock:
                            self.cut += 1
                        return  # committed on the server; the client never hears it
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()
