"""The Python and Rust writers produce identical audit rows, column by column, and both NOTIFY
pgvigil_import when an import ends."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Dict, List, Optional

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pgvigil_audit import MAX_ERROR_MESSAGE_LEN, NOTIFY_CHANNEL, record_import

EXPECTED, ROWS, REJECTED, SKIPPED = 5, 3, 1, 1
# Longer than the limit, multi-byte, with a NUL PostgreSQL text cannot hold.
FAILURE = "bad row 4:\x00 " + "é" * 2500
INSERT = (
    "INSERT INTO contacts (email, import_id) "
    "SELECT 'py' || g || '@example.com', CAST(:id AS uuid) FROM generate_series(1, :n) g"
)

COLUMNS = (
    "target_table::text, id_column::text, source_name, expected_rows, rejected_rows, skipped_rows, "
    "reported_rows, status, error_message, xact_id IS NOT NULL AS has_xact_id, "
    "pg_xact_status(xact_id) AS xact_status, created_at IS NOT NULL AS has_created_at, "
    "started_at IS NOT NULL AND started_at <= heartbeat_at AS started_before_heartbeat, "
    "finished_at IS NOT NULL AND heartbeat_at <= finished_at AS finished_after_heartbeat, "
    "created_at <= started_at AS created_first"
)


def row(db, import_id: str) -> Dict[str, object]:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        cur = conn.execute(f"SELECT {COLUMNS} FROM import_audit WHERE import_id = %s", (import_id,))
        values = cur.fetchone()
        assert values is not None, f"no audit row for {import_id}"
        return {c.name: v for c, v in zip(cur.description, values)}


def rust_writer(bins, db, fail: Optional[str]) -> str:
    args = [
        bins["record_import"],
        "--dsn",
        db.dsn,
        "--table",
        "contacts",
        "--source",
        "contacts.csv",
        "--expected",
        str(EXPECTED),
        "--rows",
        str(ROWS),
        "--rejected",
        str(REJECTED),
        "--skipped",
        str(SKIPPED),
    ]
    if fail is not None:
        args += ["--fail", fail.replace("\x00", "\\0")]  # argv cannot hold a NUL
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip()


def _counts(imp) -> None:
    imp.record_rejected(REJECTED)
    imp.record_skipped(SKIPPED)


def python_writer(driver: str, db, fail: Optional[str]) -> str:
    """The same steps as the record_import example, through ``driver``."""
    if driver == "sqlalchemy-sync":
        engine = create_engine(db.url("psycopg"))
        try:
            with record_import(engine, "contacts", source="contacts.csv", expected=EXPECTED) as imp:
                with Session(engine) as s:
                    imp.attach(s)
                    s.execute(text(INSERT), {"id": str(imp.import_id), "n": ROWS})
                    _counts(imp)
                    imp.heartbeat()
                    if fail is None:
                        s.commit()
                        imp.finish(ROWS)
                    else:
                        s.rollback()
                        imp.fail(fail)
        finally:
            engine.dispose()
        return str(imp.import_id)
    if driver == "psycopg":
        with (
            psycopg.connect(db.dsn, autocommit=True) as audit,
            record_import(audit, "contacts", source="contacts.csv", expected=EXPECTED) as imp,
            psycopg.connect(db.dsn) as conn,
        ):
            imp.attach(conn)
            conn.execute(
                "INSERT INTO contacts (email, import_id) "
                "SELECT 'py' || g, %s FROM generate_series(1, %s) g",
                (imp.import_id, ROWS),
            )
            _counts(imp)
            imp.heartbeat()
            if fail is None:
                conn.commit()
                imp.finish(ROWS)
            else:
                conn.rollback()
                imp.fail(fail)
        return str(imp.import_id)
    return asyncio.run(_async_writer(driver, db, fail))


async def _async_writer(driver: str, db, fail: Optional[str]) -> str:
    if driver == "sqlalchemy-async":
        engine = create_async_engine(db.url("asyncpg"))
        try:
            async with record_import(
                engine, "contacts", source="contacts.csv", expected=EXPECTED
            ) as imp:
                async with AsyncSession(engine) as s:
                    await imp.attach(s)
                    await s.execute(text(INSERT), {"id": str(imp.import_id), "n": ROWS})
                    _counts(imp)
                    await imp.heartbeat()
                    if fail is None:
                        await s.commit()
                        await imp.finish(ROWS)
                    else:
                        await s.rollback()
                        await imp.fail(fail)
        finally:
            await engine.dispose()
        return str(imp.import_id)
    assert driver == "asyncpg"
    audit, conn = await asyncpg.connect(db.url()), await asyncpg.connect(db.url())
    try:
        async with record_import(
            audit, "contacts", source="contacts.csv", expected=EXPECTED
        ) as imp:
            tx = conn.transaction()
            await tx.start()
            await imp.attach(conn)
            await conn.execute(
                "INSERT INTO contacts (email, import_id) "
                "SELECT 'py' || g, $1 FROM generate_series(1, $2) g",
                imp.import_id,
                ROWS,
            )
            _counts(imp)
            await imp.heartbeat()
            if fail is None:
                await tx.commit()
                await imp.finish(ROWS)
            else:
                await tx.rollback()
                await imp.fail(fail)
    finally:
        await audit.close()
        await conn.close()
    return str(imp.import_id)


DRIVERS = ["sqlalchemy-async", "sqlalchemy-sync", "psycopg", "asyncpg"]


@pytest.mark.parametrize("outcome", ["committed", "failed"])
def test_python_and_rust_writers_write_identical_rows(outcome: str, bins, db) -> None:
    fail = None if outcome == "committed" else FAILURE
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        rust_id = rust_writer(bins, db, fail)
        ids = {driver: python_writer(driver, db, fail) for driver in DRIVERS}
        notified: List[str] = [
            n.payload for n in listener.notifies(timeout=10, stop_after=1 + len(DRIVERS))
        ]
    assert sorted(notified) == sorted([rust_id, *ids.values()])

    reference = row(db, rust_id)
    expected_message = (
        None
        if fail is None
        else ("bad row 4:\ufffd " + "é" * 2500)
        .encode()[:MAX_ERROR_MESSAGE_LEN]
        .decode("utf-8", "ignore")
    )
    assert reference == {
        "target_table": "contacts",
        "id_column": "import_id",
        "source_name": "contacts.csv",
        "expected_rows": EXPECTED,
        "rejected_rows": REJECTED,
        "skipped_rows": SKIPPED,
        "reported_rows": ROWS if fail is None else None,
        "status": outcome,
        "error_message": expected_message,
        "has_xact_id": True,
        "xact_status": "committed" if fail is None else "aborted",
        "has_created_at": True,
        "started_before_heartbeat": True,
        "finished_after_heartbeat": True,
        "created_first": True,
    }
    for driver, import_id in ids.items():
        assert row(db, import_id) == reference, driver
    committed = db.query("SELECT count(*) FROM contacts")[0][0]
    assert committed == (ROWS * (1 + len(DRIVERS)) if fail is None else 0)


def test_stamped_ids_are_uuids(db) -> None:
    engine = create_engine(db.url("psycopg"))
    try:
        with record_import(
            engine, "contacts", source="s", expected=2, import_id=uuid.UUID(int=7)
        ) as imp:
            rows = imp.stamp([{"email": "a"}, {"email": "b", "import_id": None}])
        assert rows == [
            {"email": "a", "import_id": uuid.UUID(int=7)},
            {"email": "b", "import_id": uuid.UUID(int=7)},
        ]
        assert row(db, str(uuid.UUID(int=7)))["reported_rows"] is None  # never reported
    finally:
        engine.dispose()


def test_background_heartbeats_until_the_import_ends(db) -> None:
    from support import wait_for

    def heartbeat_at(import_id: str):
        return db.query("SELECT heartbeat_at FROM import_audit WHERE import_id = %s", import_id)[0][
            0
        ]

    engine = create_engine(db.url("psycopg"))
    try:
        with record_import(engine, "contacts", source="s", expected=0, heartbeat_every=0.1) as imp:
            first = heartbeat_at(str(imp.import_id))
            wait_for("a background heartbeat", lambda: heartbeat_at(str(imp.import_id)) > first)
        finished = db.query("SELECT status, heartbeat_at = finished_at FROM import_audit")
        assert finished == [("committed", True)]
    finally:
        engine.dispose()
