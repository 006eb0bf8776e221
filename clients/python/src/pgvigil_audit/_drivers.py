"""One small adapter per driver, so the audit logic never cares which one the app uses.

Supported, each imported only if the app already has it (no runtime dependency of our own):

=====================  ==========================================  ===========================
driver                 audit connection (autocommit, ours)          import transaction (attach)
=====================  ==========================================  ===========================
SQLAlchemy 2 (sync)    ``Engine`` (we check out a connection set   ``Session``, ``Connection``
                       to AUTOCOMMIT) or an AUTOCOMMIT
                       ``Connection``
SQLAlchemy 2 (async)   ``AsyncEngine`` or an AUTOCOMMIT            ``AsyncSession``,
                       ``AsyncConnection``                          ``AsyncConnection``
psycopg 3              ``Connection(autocommit=True)``              ``Connection``
psycopg 3 (async)      ``AsyncConnection(autocommit=True)``         ``AsyncConnection``
asyncpg                ``Connection`` (outside a transaction) or    ``Connection`` (inside
                       ``Pool`` (we acquire one)                    ``conn.transaction()``)
=====================  ==========================================  ===========================
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from ._sql import render


class AuditConnectionError(TypeError):
    """The object given as the audit connection cannot be used (wrong kind, or not autocommit)."""


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_async_source(obj: Any) -> bool:
    """Whether ``obj`` is an asyncio driver object (to be used with ``async with``)."""
    mod = _module(obj)
    if mod.startswith("sqlalchemy.ext.asyncio"):
        return True
    if mod.startswith("asyncpg"):
        return True
    if mod.startswith("psycopg"):
        import psycopg

        return isinstance(obj, psycopg.AsyncConnection)
    return False


# --- sync ---------------------------------------------------------------------------------


class SyncConn:
    """A sync audit connection: ``fetch`` rows, ``execute`` without rows, ``close`` if ours."""

    style = "format"

    def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        self.fetch(sql, params)

    def close(self) -> None:
        pass


class _PsycopgSync(SyncConn):
    style = "format"

    def __init__(self, conn: Any) -> None:
        if not conn.autocommit:
            raise AuditConnectionError(
                "the audit connection must be in autocommit mode, so its rows survive a "
                "rolled-back import: psycopg.connect(dsn, autocommit=True), a connection of "
                "its own, never the one that runs the import"
            )
        self.conn = conn

    def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        q, p = render(sql, params, self.style)
        cur = self.conn.execute(q, p)
        return list(cur.fetchall()) if cur.description else []


class _SQLAlchemySync(SyncConn):
    style = "named"

    def __init__(self, source: Any) -> None:
        from sqlalchemy.engine import Connection, Engine

        if isinstance(source, Engine):
            self.conn = source.connect().execution_options(isolation_level="AUTOCOMMIT")
            self.owned = True
        elif isinstance(source, Connection):
            if source.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                raise AuditConnectionError(
                    "the audit connection must be in autocommit mode: pass the Engine (the "
                    "helper checks out a connection of its own) or "
                    "engine.connect().execution_options(isolation_level='AUTOCOMMIT')"
                )
            self.conn, self.owned = source, False
        else:
            raise AuditConnectionError(f"not a SQLAlchemy Engine or Connection: {source!r}")

    def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        from sqlalchemy import text

        q, p = render(sql, params, self.style)
        result = self.conn.execute(text(q), p)
        return [tuple(r) for r in result] if result.returns_rows else []

    def close(self) -> None:
        if self.owned:
            self.conn.close()


def sync_audit_conn(source: Any) -> SyncConn:
    """The sync audit connection for ``source`` (see the module table)."""
    mod = _module(source)
    if mod.startswith("sqlalchemy"):
        if mod.startswith("sqlalchemy.ext.asyncio"):
            raise AuditConnectionError(
                "an AsyncEngine needs `async with record_import(...)`, not `with`"
            )
        return _SQLAlchemySync(source)
    if mod.startswith("psycopg"):
        import psycopg

        if isinstance(source, psycopg.Connection):
            return _PsycopgSync(source)
        if isinstance(source, psycopg.AsyncConnection):
            raise AuditConnectionError(
                "a psycopg AsyncConnection needs `async with record_import(...)`, not `with`"
            )
    if mod.startswith("asyncpg"):
        raise AuditConnectionError("asyncpg is asyncio-only: use `async with record_import(...)`")
    raise AuditConnectionError(
        f"cannot write the audit row through {type(source).__qualname__}: give a SQLAlchemy "
        "Engine, a psycopg Connection(autocommit=True) (sync) or an AsyncEngine, a psycopg "
        "AsyncConnection or an asyncpg Connection/Pool (async)"
    )


def sync_xact(target: Any) -> Tuple[str, int, Optional[str]]:
    """Run the xact-id queries inside the import transaction ``target`` (sync): returns
    ``(xact_id, backend_pid, xact_id_again)``."""
    from ._sql import XACT_AGAIN_SQL, XACT_SQL

    mod = _module(target)
    if mod.startswith("sqlalchemy"):
        from sqlalchemy import text

        first = target.execute(text(XACT_SQL)).one()
        again = target.execute(text(XACT_AGAIN_SQL)).scalar()
        return str(first[0]), int(first[1]), again
    if mod.startswith("psycopg"):
        first = target.execute(XACT_SQL).fetchone()
        again = target.execute(XACT_AGAIN_SQL).fetchone()[0]
        return str(first[0]), int(first[1]), again
    raise TypeError(
        f"attach() takes the import's Session, Connection or psycopg Connection, not "
        f"{type(target).__qualname__}"
    )


# --- async --------------------------------------------------------------------------------


class AsyncConn:
    style = "dollar"

    async def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        raise NotImplementedError

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self.fetch(sql, params)

    async def close(self) -> None:
        pass


class _PsycopgAsync(AsyncConn):
    style = "format"

    def __init__(self, conn: Any) -> None:
        if not conn.autocommit:
            raise AuditConnectionError(
                "the audit connection must be in autocommit mode, so its rows survive a "
                "rolled-back import: await psycopg.AsyncConnection.connect(dsn, "
                "autocommit=True), a connection of its own"
            )
        self.conn = conn

    async def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        q, p = render(sql, params, self.style)
        cur = await self.conn.execute(q, p)
        return list(await cur.fetchall()) if cur.description else []


class _Asyncpg(AsyncConn):
    style = "dollar"

    def __init__(self, source: Any) -> None:
        self.source = source
        self.conn: Any = None
        self.pool: Any = None

    async def open(self) -> None:
        import asyncpg

        if isinstance(self.source, asyncpg.Pool):
            self.pool = self.source
            self.conn = await self.pool.acquire()
        else:
            self.conn = self.source
        if self.conn.is_in_transaction():
            raise AuditConnectionError(
                "the audit connection is inside a transaction: give the helper a connection "
                "of its own (or the Pool), never the one that runs the import"
            )

    async def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        rows = await self.conn.fetch(sql, *params)
        return [tuple(r) for r in rows]

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self.conn.execute(sql, *params)

    async def close(self) -> None:
        if self.pool is not None and self.conn is not None:
            await self.pool.release(self.conn)
            self.conn = None


class _SQLAlchemyAsync(AsyncConn):
    style = "named"

    def __init__(self, source: Any) -> None:
        self.source = source
        self.conn: Any = None
        self.owned = False

    async def open(self) -> None:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

        if isinstance(self.source, AsyncEngine):
            conn = await self.source.connect()
            self.conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self.owned = True
        elif isinstance(self.source, AsyncConnection):
            if self.source.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                raise AuditConnectionError(
                    "the audit connection must be in autocommit mode: pass the AsyncEngine "
                    "(the helper checks out a connection of its own)"
                )
            self.conn = self.source
        else:
            raise AuditConnectionError(f"not an AsyncEngine or AsyncConnection: {self.source!r}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
        from sqlalchemy import text

        q, p = render(sql, params, self.style)
        result = await self.conn.execute(text(q), p)
        return [tuple(r) for r in result] if result.returns_rows else []

    async def close(self) -> None:
        if self.owned and self.conn is not None:
            await self.conn.close()
            self.conn = None


async def async_audit_conn(source: Any) -> AsyncConn:
    mod = _module(source)
    conn: AsyncConn
    if mod.startswith("sqlalchemy.ext.asyncio"):
        conn = _SQLAlchemyAsync(source)
        await conn.open()  # type: ignore[attr-defined]
        return conn
    if mod.startswith("asyncpg"):
        conn = _Asyncpg(source)
        await conn.open()  # type: ignore[attr-defined]
        return conn
    if mod.startswith("psycopg"):
        import psycopg

        if isinstance(source, psycopg.AsyncConnection):
            return _PsycopgAsync(source)
    raise AuditConnectionError(
        f"cannot write the audit row through {type(source).__qualname__} with `async with`: "
        "give an AsyncEngine, a psycopg AsyncConnection(autocommit=True) or an asyncpg "
        "Connection/Pool (or use `with` for a sync Engine or psycopg Connection)"
    )


async def async_xact(target: Any) -> Tuple[str, int, Optional[str]]:
    from ._sql import XACT_AGAIN_SQL, XACT_SQL

    mod = _module(target)
    if mod.startswith("sqlalchemy"):
        from sqlalchemy import text

        first = (await target.execute(text(XACT_SQL))).one()
        again = (await target.execute(text(XACT_AGAIN_SQL))).scalar()
        return str(first[0]), int(first[1]), again
    if mod.startswith("asyncpg"):
        first = await target.fetchrow(XACT_SQL)
        again = await target.fetchval(XACT_AGAIN_SQL)
        return str(first[0]), int(first[1]), again
    if mod.startswith("psycopg"):
        first = await (await target.execute(XACT_SQL)).fetchone()
        again = (await (await target.execute(XACT_AGAIN_SQL)).fetchone())[0]
        return str(first[0]), int(first[1]), again
    raise TypeError(
        f"attach() takes the import's AsyncSession, AsyncConnection, asyncpg Connection or "
        f"psycopg AsyncConnection, not {type(target).__qualname__}"
    )
