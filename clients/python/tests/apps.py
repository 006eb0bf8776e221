"""The seed's ``import_csv``, written the way apps on each driver write it, in the three shapes of
the incident (examples/demo.rs): correct; the forgotten COMMIT (the app reports success and its
session/connection goes away); and committing only the first 3% while reporting everything.

Each function returns the import id. ``rows`` are ``{"email", "name"}`` dicts, as
``csv.DictReader`` gives them.
"""

from __future__ import annotations

import csv
import io
from typing import Dict, List

import asyncpg
import psycopg
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, Uuid, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from pgvigil_audit import record_import

contacts = Table(
    "contacts",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("email", Text, nullable=False),
    Column("name", Text),
    Column("import_id", Uuid),
)

Rows = List[Dict[str, str]]


def csv_rows(tag: str, n: int) -> Rows:
    text = "email,name\n" + "".join(
        f"contact{i}.{tag}@example.com,Contact {i}\n" for i in range(1, n + 1)
    )
    return list(csv.DictReader(io.StringIO(text)))


def three_percent(rows: Rows) -> int:
    return len(rows) * 3 // 100


# --- SQLAlchemy, asyncio (the incident's stack: AsyncSession on asyncpg) -------------------


async def sa_async_correct(engine, source: str, rows: Rows) -> str:
    async with record_import(engine, "contacts", source=source, expected=len(rows)) as imp:
        async with AsyncSession(engine) as session:
            async with session.begin():
                await imp.attach(session)
                await session.execute(insert(contacts), imp.stamp(rows))
        imp.record_written(len(rows))
    return str(imp.import_id)


async def sa_async_forgot_commit(engine, source: str, rows: Rows) -> str:
    async with record_import(engine, "contacts", source=source, expected=len(rows)) as imp:
        async with AsyncSession(engine) as session:
            await imp.attach(session)
            await session.execute(insert(contacts), imp.stamp(rows))
            imp.record_written(len(rows))
            # The bug: no `await session.commit()`; closing the session rolls everything back.
    return str(imp.import_id)


async def sa_async_three_percent(engine, source: str, rows: Rows) -> str:
    first = three_percent(rows)
    async with record_import(engine, "contacts", source=source, expected=len(rows)) as imp:
        async with AsyncSession(engine) as session:
            async with session.begin():
                await imp.attach(session)
                await session.execute(insert(contacts), imp.stamp(rows[:first]))
            await session.execute(insert(contacts), imp.stamp(rows[first:]))  # never committed
        imp.record_written(len(rows))
    return str(imp.import_id)


# --- SQLAlchemy, sync ----------------------------------------------------------------------


def sa_sync_correct(engine, source: str, rows: Rows) -> str:
    with record_import(engine, "contacts", source=source, expected=len(rows)) as imp:
        with Session(engine) as session, session.begin():
            imp.attach(session)
            session.execute(insert(contacts), imp.stamp(rows))
        imp.record_written(len(rows))
    return str(imp.import_id)


def sa_sync_forgot_commit(engine, source: str, rows: Rows) -> str:
    with record_import(engine, "contacts", source=source, expected=len(rows)) as imp:
        with Session(engine) as session:
            imp.attach(session)
            session.execute(insert(contacts), imp.stamp(rows))
            imp.record_written(len(rows))
    return str(imp.import_id)


def sa_sync_three_percent(engine, source: str, rows: Rows) -> str:
    first = three_percent(rows)
    with record_import(engine, "contacts", source=source, expected=len(rows)) as imp:
        with Session(engine) as session:
            with session.begin():
                imp.attach(session)
                session.execute(insert(contacts), imp.stamp(rows[:first]))
            session.execute(insert(contacts), imp.stamp(rows[first:]))
        imp.record_written(len(rows))
    return str(imp.import_id)


# --- psycopg 3 -----------------------------------------------------------------------------

PG_INSERT = "INSERT INTO contacts (email, name, import_id) VALUES (%s, %s, %s)"


def _tuples(imp, rows: Rows):
    return [(r["email"], r["name"], imp.import_id) for r in rows]


def psycopg_correct(dsn: str, source: str, rows: Rows) -> str:
    with psycopg.connect(dsn, autocommit=True) as audit:
        with record_import(audit, "contacts", source=source, expected=len(rows)) as imp:
            with psycopg.connect(dsn) as conn:
                imp.attach(conn)
                conn.cursor().executemany(PG_INSERT, _tuples(imp, rows))
                conn.commit()
            imp.record_written(len(rows))
    return str(imp.import_id)


def psycopg_forgot_commit(dsn: str, source: str, rows: Rows) -> str:
    with psycopg.connect(dsn, autocommit=True) as audit:
        with record_import(audit, "contacts", source=source, expected=len(rows)) as imp:
            conn = psycopg.connect(dsn)
            imp.attach(conn)
            conn.cursor().executemany(PG_INSERT, _tuples(imp, rows))
            imp.record_written(len(rows))
            conn.close()  # the bug: no conn.commit(); the server rolls back
    return str(imp.import_id)


def psycopg_three_percent(dsn: str, source: str, rows: Rows) -> str:
    first = three_percent(rows)
    with psycopg.connect(dsn, autocommit=True) as audit:
        with record_import(audit, "contacts", source=source, expected=len(rows)) as imp:
            conn = psycopg.connect(dsn)
            imp.attach(conn)
            conn.cursor().executemany(PG_INSERT, _tuples(imp, rows[:first]))
            conn.commit()
            conn.cursor().executemany(PG_INSERT, _tuples(imp, rows[first:]))
            imp.record_written(len(rows))
            conn.close()
    return str(imp.import_id)


# --- asyncpg -------------------------------------------------------------------------------


async def _copy(conn, imp, rows: Rows) -> None:
    await conn.copy_records_to_table(
        "contacts",
        records=[(r["email"], r["name"], imp.import_id) for r in rows],
        columns=["email", "name", "import_id"],
    )


async def asyncpg_correct(dsn: str, source: str, rows: Rows) -> str:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with record_import(pool, "contacts", source=source, expected=len(rows)) as imp:
            async with pool.acquire() as conn, conn.transaction():
                await imp.attach(conn)
                await _copy(conn, imp, rows)
            imp.record_written(len(rows))
    finally:
        await pool.close()
    return str(imp.import_id)


async def asyncpg_forgot_commit(dsn: str, source: str, rows: Rows) -> str:
    audit = await asyncpg.connect(dsn)
    try:
        async with record_import(audit, "contacts", source=source, expected=len(rows)) as imp:
            conn = await asyncpg.connect(dsn)
            tx = conn.transaction()
            await tx.start()
            await imp.attach(conn)
            await _copy(conn, imp, rows)
            imp.record_written(len(rows))
            await conn.close()  # the bug: no `await tx.commit()`
    finally:
        await audit.close()
    return str(imp.import_id)


async def asyncpg_three_percent(dsn: str, source: str, rows: Rows) -> str:
    first = three_percent(rows)
    audit = await asyncpg.connect(dsn)
    try:
        async with record_import(audit, "contacts", source=source, expected=len(rows)) as imp:
            conn = await asyncpg.connect(dsn)
            async with conn.transaction():
                await imp.attach(conn)
                await _copy(conn, imp, rows[:first])
            tx = conn.transaction()
            await tx.start()
            await _copy(conn, imp, rows[first:])
            imp.record_written(len(rows))
            await conn.close()
    finally:
        await audit.close()
    return str(imp.import_id)
