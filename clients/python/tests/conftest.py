"""Fixtures: one throwaway cluster per session, a fresh database (with ``contacts`` and
``import_audit``) per test, and a real pgvigil daemon on demand."""

from __future__ import annotations

from typing import Callable, Iterator

import psycopg
import pytest
from support import Cluster, Daemon, binaries

from pgvigil_audit import IMPORT_AUDIT_DDL

CONTACTS = """
CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL, name text, import_id uuid);
CREATE INDEX ON contacts (import_id);
"""


@pytest.fixture(scope="session")
def bins() -> dict:
    return binaries()


@pytest.fixture(scope="session")
def cluster(bins: dict) -> Iterator[Cluster]:
    c = Cluster(bins["pgvigil-testkit"])
    yield c
    c.close()


class Database:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.dsn = cluster.dsn(name)

    def url(self, driver: str = "") -> str:
        """SQLAlchemy URL for ``driver`` (``postgresql+asyncpg://…``), or the plain
        ``postgresql://`` URL asyncpg takes."""
        return self.cluster.url(self.name, driver)

    def query(self, sql: str, *params: object) -> list:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params or None)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def db(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Database]:
    name = cluster.create_database("py_" + request.node.name.replace("[", "_").strip("]"))
    d = Database(cluster, name)
    with psycopg.connect(d.dsn, autocommit=True) as conn:
        conn.execute(CONTACTS)
        conn.execute(IMPORT_AUDIT_DDL)
    yield d
    cluster.drop_database(name)


@pytest.fixture
def pgvigil(bins: dict, tmp_path) -> Iterator[Callable[[Database], Daemon]]:
    started = []

    def start(database: Database) -> Daemon:
        d = Daemon(bins["pgvigil"], database.dsn, tmp_path)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()
