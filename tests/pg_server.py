"""A throwaway PostgreSQL server for the ledger's storage tests, started once per test session.

It runs from the binaries on this machine (``initdb``, ``pg_ctl``; on PATH or under
``/usr/lib/postgresql/*/bin``), in a temporary folder, listening on a free loopback port, as the
``postgres`` user when the tests run as root (``initdb`` refuses to run as root). Each test gets
its own database. ``PHALANX_TEST_POSTGRES_URL`` points the tests at an existing server instead.

Without the binaries the PostgreSQL cases skip, unless ``PHALANX_REQUIRE_POSTGRES=1`` (set by
``.ci/run``), which turns a missing PostgreSQL into a failure, so CI never silently skips them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str):
    if os.environ.get("PHALANX_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (PHALANX_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


class Unavailable(Exception):
    """PostgreSQL cannot be started here; the message says why."""


@contextlib.contextmanager
def throwaway_postgres():
    """Start a PostgreSQL server in a temporary folder; yield its URL; stop it and delete it all."""
    bindir = _binaries()
    if bindir is None:
        raise Unavailable("initdb and pg_ctl were not found")
    as_postgres: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="phalanx-pg-"))
    try:
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise Unavailable("running as root without runuser to switch to the postgres user")
            try:
                shutil.chown(base, "postgres", "postgres")
            except (LookupError, PermissionError) as e:
                raise Unavailable(f"cannot hand the data folder to the postgres user ({e})") from None
            as_postgres = ["runuser", "-u", "postgres", "--"]
        data, port = base / "data", _free_port()

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120)

        init = run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        if init.returncode != 0:
            raise Unavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        start = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start")
        if start.returncode != 0:
            log = (base / "log").read_text()[-300:] if (base / "log").exists() else ""
            raise Unavailable(f"the server did not start: {start.stderr.strip()[-200:]} {log}")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a running PostgreSQL server (superuser, trust auth, loopback only)."""
    url = os.environ.get("PHALANX_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        with throwaway_postgres() as url:
            yield url
    except Unavailable as e:
        _unavailable(str(e))


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the session's server, dropped after the test."""
    import psycopg
    import sqlalchemy as sa

    server = sa.engine.make_url(postgres_server)
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = f"host={server.host} port={server.port} user={server.username} dbname={server.database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request, tmp_path):
    """Where a test's ledger lives: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("pg_url")
