"""N+1 detection: 50 lookups in one unit are reported once with count 50; 50 units of one lookup
each are not; the eager-loading version (one ``= ANY(:ids)`` query) is not."""

from __future__ import annotations

import asyncio

import pytest
from apps import contacts
from sqlalchemy import create_engine, insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from pgvigil_audit import install_n_plus_one

LOOKUP = text("SELECT name FROM contacts WHERE id = :id")
EAGER = text("SELECT id, name FROM contacts WHERE id = ANY(:ids)")


def seed(db) -> None:
    db.query(
        "INSERT INTO contacts (email, name) SELECT 'c' || g, 'C' || g FROM generate_series(1, 50) g"
    )


def test_n_plus_one_sync(db) -> None:
    seed(db)
    engine = create_engine(db.url("psycopg"))
    n1 = install_n_plus_one(engine)
    try:
        with n1.unit_of_work("GET /campaigns/7"), engine.connect() as c:
            for i in range(1, 51):
                c.execute(LOOKUP, {"id": i}).scalar()
            c.execute(
                insert(contacts), [{"email": f"x{i}"} for i in range(2000)]
            )  # one bulk INSERT
            c.rollback()
        assert [(p.summary, p.count, p.unit) for p in n1.problems] == [
            ("SELECT contacts", 50, "GET /campaigns/7")
        ]
        assert "SELECT name FROM contacts WHERE id = ?" in n1.problems[0].statement
        n1.clear()
        for i in range(1, 51):
            with n1.unit_of_work(f"request {i}"), engine.connect() as c:
                c.execute(LOOKUP, {"id": i}).scalar()
        with n1.unit_of_work("eager"), engine.connect() as c:
            assert len(c.execute(EAGER, {"ids": list(range(1, 51))}).all()) == 50
        for i in range(1, 51):  # outside any unit of work: not counted
            with engine.connect() as c:
                c.execute(LOOKUP, {"id": i})
        assert n1.problems == []
    finally:
        n1.remove()
        engine.dispose()


def test_n_plus_one_async_units_are_per_task(db) -> None:
    seed(db)

    async def main():
        engine = create_async_engine(db.url("asyncpg"))
        n1 = install_n_plus_one(engine, threshold=20)
        try:

            async def request(name: str, lookups: int) -> None:
                with n1.unit_of_work(name):
                    async with engine.connect() as c:
                        for i in range(1, lookups + 1):
                            await c.execute(LOOKUP, {"id": i})

            # Concurrent tasks: each counts its own statements.
            await asyncio.gather(request("job a", 15), request("job b", 15), request("job c", 21))
            return [(p.unit, p.count) for p in n1.problems]
        finally:
            n1.remove()
            await engine.dispose()

    assert asyncio.run(main()) == [("job c", 21)]


def test_threshold_is_checked() -> None:
    with pytest.raises(ValueError):
        install_n_plus_one(object(), threshold=0)
