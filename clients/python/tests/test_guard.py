"""The forgotten-COMMIT guard: what it reports, and what it must not."""

from __future__ import annotations

import asyncio
import gc

import pytest
from apps import contacts
from sqlalchemy import create_engine, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pgvigil_audit import UncommittedWritesError, install_commit_guard

ROW = {"email": "a@example.com", "name": "A"}


@pytest.fixture
def engine(db):
    e = create_engine(db.url("psycopg"))
    guard = install_commit_guard(e)
    yield e, guard
    guard.remove()
    e.dispose()


def kinds(guard) -> list:
    return [(p.kind, p.tables) for p in guard.problems]


def test_committed_rolled_back_and_read_only_work_is_not_reported(engine) -> None:
    e, guard = engine
    with Session(e) as s, s.begin():
        s.execute(insert(contacts), [ROW, ROW])
    with Session(e) as s:
        s.execute(insert(contacts), [ROW])
        s.rollback()  # explicit: intended
    with Session(e) as s:
        s.execute(text("SELECT count(*) FROM contacts")).scalar()
    with e.connect() as c:
        c.execute(insert(contacts), [ROW])
        c.rollback()
    with e.begin() as c:
        c.execute(insert(contacts), [ROW])
        with pytest.raises(RuntimeError):
            with c.begin_nested():
                c.execute(insert(contacts), [ROW])
                raise RuntimeError("savepoint rolled back on purpose")
    with e.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(insert(contacts), [ROW])  # committed as it runs
    assert guard.problems == []


def test_closed_session_and_connection_are_reported_with_tables_and_rows(engine) -> None:
    e, guard = engine
    with Session(e) as s:
        s.execute(insert(contacts), [ROW] * 3)
        s.execute(text("UPDATE contacts SET name = 'B'"))
    with e.connect() as c:
        c.execute(text("INSERT INTO contacts (email) VALUES ('x'), ('y')"))
    assert kinds(guard) == [
        ("session-closed", {"contacts": 3 + 3}),  # 3 inserted, then the same 3 updated
        ("connection-closed", {"contacts": 2}),
    ]
    assert "contacts: 2 rows" in guard.problems[1].message


def test_garbage_collected_session_and_unseen_writes_are_reported(engine) -> None:
    e, guard = engine
    s = Session(e)
    s.execute(insert(contacts), [ROW])
    del s
    gc.collect()
    # A write the events cannot see (a raw DBAPI cursor): the server says the transaction wrote.
    with e.connect() as c:
        cur = c.connection.dbapi_connection.cursor()
        cur.execute("INSERT INTO contacts (email) VALUES ('raw')")
    assert [p.kind for p in guard.problems] == ["returned-open", "returned-open"]
    assert guard.problems[0].tables == {"contacts": 1}
    assert guard.problems[1].tables == {} and guard.problems[1].xact_id
    with pytest.raises(UncommittedWritesError):
        guard.assert_clean()
    assert guard.problems == []


def test_raise_on_problem_raises_out_of_the_closing_session(db) -> None:
    e = create_engine(db.url("psycopg"))
    guard = install_commit_guard(e, raise_on_problem=True)
    try:
        with pytest.raises(UncommittedWritesError, match="contacts: 1 row"):
            with Session(e) as s:
                s.execute(insert(contacts), [ROW])
    finally:
        guard.remove()
        e.dispose()


def test_async_engine_on_asyncpg(db) -> None:
    async def main() -> list:
        e = create_async_engine(db.url("asyncpg"))
        seen: list = []
        guard = install_commit_guard(e, on_problem=seen.append)
        try:
            async with AsyncSession(e) as s:
                async with s.begin():
                    await s.execute(insert(contacts), [ROW])
            async with AsyncSession(e) as s:
                await s.execute(insert(contacts), [ROW, ROW])
            async with e.connect() as c:
                await c.execute(text("DELETE FROM contacts"))
            async with e.connect() as c:  # a read-only transaction, checked with the server
                await c.execute(text("SELECT 1"))
        finally:
            guard.remove()
            await e.dispose()
        return [(p.kind, p.tables) for p in seen]

    assert asyncio.run(main()) == [
        ("session-closed", {"contacts": 2}),
        ("connection-closed", {"contacts": 1}),
    ]
