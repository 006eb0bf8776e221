"""Misuse gets a clear error naming the cause and the fix; an ended import refuses updates."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from pgvigil_audit import (
    AuditConnectionError,
    AuditError,
    ImportAudit,
    NotRunningError,
    record_import,
)


def test_the_audit_connection_must_be_autocommit_and_the_right_kind(db) -> None:
    with psycopg.connect(db.dsn) as conn:
        with pytest.raises(AuditConnectionError, match="autocommit=True"):
            ImportAudit.start(conn, "contacts", source="s", expected=1)
    engine = create_engine(db.url("psycopg"))
    try:
        with pytest.raises(TypeError, match="use `with record_import"):
            asyncio.run(record_import(engine, "contacts", source="s", expected=1).__aenter__())
        with pytest.raises(AuditConnectionError, match="cannot write the audit row"):
            ImportAudit.start(object(), "contacts", source="s", expected=1)
        with pytest.raises(ValueError, match="expected must be a row count"):
            ImportAudit.start(engine, "contacts", source="s", expected=-1)
        # The target table must exist (regclass): the driver's error, unchanged.
        with pytest.raises(Exception, match="nope"):
            ImportAudit.start(engine, "nope", source="s", expected=1)
    finally:
        engine.dispose()

    async def async_engine_with_sync_with() -> None:
        e = create_async_engine(db.url("asyncpg"))
        try:
            with pytest.raises(TypeError, match="async with record_import"):
                with record_import(e, "contacts", source="s", expected=1):
                    pass
        finally:
            await e.dispose()

    asyncio.run(async_engine_with_sync_with())


def test_attach_outside_a_transaction_or_on_the_audit_connection_is_refused(db) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as audit:
        with record_import(audit, "contacts", source="s", expected=0) as imp:
            with psycopg.connect(db.dsn, autocommit=True) as other:
                with pytest.raises(AuditError, match="not inside a transaction"):
                    imp.attach(other)
            with pytest.raises(AuditError, match="runs on the audit connection"):
                imp.attach(audit)
            imp.cancel("changed my mind")
        status = db.query("SELECT status, error_message, xact_id FROM import_audit")
        assert status == [("cancelled", "changed my mind", None)]


def test_an_import_ended_elsewhere_refuses_updates(db) -> None:
    engine = create_engine(db.url("psycopg"))
    try:
        imp = ImportAudit.start(engine, "contacts", source="s", expected=1)
        db.query("UPDATE import_audit SET status = 'cancelled'")
        with pytest.raises(NotRunningError):
            imp.heartbeat()
        with pytest.raises(NotRunningError):
            imp.finish(1)
    finally:
        engine.dispose()


def test_an_exception_fails_the_import_and_propagates_unchanged(db) -> None:
    engine = create_engine(db.url("psycopg"))
    try:
        with pytest.raises(KeyError, match="email"):
            with record_import(engine, "contacts", source="bad.csv", expected=3):
                raise KeyError("email")
        rows = db.query("SELECT status, error_message, finished_at IS NOT NULL FROM import_audit")
        assert rows == [("failed", "KeyError: 'email'", True)]
    finally:
        engine.dispose()
