"""The forgotten-COMMIT guard for SQLAlchemy 2 (sync and asyncio, any PostgreSQL driver).

``install_commit_guard(engine)`` notices a ``Session`` or ``Connection`` that is closed,
returned to the pool or garbage-collected while its transaction holds flushed but uncommitted
writes, the exact bug of the incident pgvigil was built for, and reports it (see
:mod:`pgvigil_audit.problems`): a WARNING on logger ``pgvigil_audit`` naming the tables and row
counts, an optional callback, and an exception for tests.

How it knows, step by step (all state lives in the pooled connection's ``info`` dict, so it
follows the DBAPI connection through Sessions, Connections and the pool):

1. ``begin`` (Connection event): a transaction starts; its write log is empty.
2. ``after_cursor_execute``: a statement that writes (INSERT/UPDATE/DELETE/MERGE/TRUNCATE,
   ``COPY … FROM``, ``CALL``, a data-modifying CTE; read from the compiled statement's table or,
   for ``text()``, by pgvigil-audit's SQL tokenizer, cached per statement) adds its table and
   ``cursor.rowcount`` to the log. One ``execute()`` delivered in several ``insertmanyvalues``
   batches adds each batch's rows. Connections in autocommit mode are skipped: their writes are
   already committed.
3. ``savepoint`` / ``rollback_savepoint`` / ``release_savepoint``: a rollback to a savepoint
   drops the writes made since it (an explicit, intended rollback).
4. ``commit``: the log is cleared. ``rollback``: the log is set aside as *discarded*; before the
   ROLLBACK is sent, if the log is empty and ``verify_with_server`` is on, the guard asks the
   server ``pg_current_xact_id_if_assigned()``: a transaction id means the transaction wrote
   (or locked) rows through a path the events did not see (a raw DBAPI cursor, a function).
5. A transaction SQLAlchemy never saw begin (statements on a raw DBAPI cursor) is found at the
   pool reset from the driver's own transaction status (psycopg, psycopg2, asyncpg; no round
   trip), then checked with the server as above.
6. Explicit rollbacks are not reported: ``Session.rollback()`` fires the Session's
   ``after_rollback`` event, which forgets the discarded writes of the Session's connections;
   a Core ``Connection.rollback()`` leaves the Connection with no transaction, so SQLAlchemy
   tells the pool reset that the transaction was *not* reset inline (``transaction_was_reset``).
7. ``reset`` (pool event, on every return to the pool and on garbage collection): report when
   (a) the transaction is still open with writes (the Connection or Session was
   garbage-collected or never closed: ``returned-open``), or (b) writes were discarded by
   ``Connection.close()`` (``transaction_was_reset``: ``connection-closed``) or by
   ``Session.close()`` (``session-closed``).
8. With ``raise_on_problem``, a problem found while a ``Session`` closes is raised from its
   ``after_transaction_end`` event, i.e. out of ``session.close()`` / ``async with
   AsyncSession(...)``; one found in the pool (a Core connection, garbage collection) cannot be
   raised there (SQLAlchemy logs and swallows errors in pool resets), so tests call
   :meth:`CommitGuard.assert_clean`.

Cost: one dict update per write statement; reads cost one cached dictionary lookup. With
``verify_with_server`` (default on), one extra round trip per rollback of a transaction in which
no write was seen, i.e. each read-only Session closed without COMMIT; turn it off in production
if that matters. asyncio engines: the same events run inside SQLAlchemy's greenlet, so the server
check works there too, except during garbage collection, where no I/O is possible (SQLAlchemy
itself then only terminates the connection); the event log still tells what was written.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Dict, List, Optional

from ._sqltext import statement_info
from .problems import Problem, Reporter, UncommittedWrites, UncommittedWritesError, describe_tables

_KEY = "pgvigil_audit.guard"
_SESSION_KEY = "pgvigil_audit.guard.session"


class _TxState:
    """What one pooled connection's current transaction has written."""

    __slots__ = (
        "open",
        "writes",
        "savepoints",
        "discarded",
        "server_xid",
        "session",
        "last_context",
    )

    def __init__(self) -> None:
        self.open = False
        self.writes: List[tuple] = []  # (table, rows or None)
        self.savepoints: List[int] = []
        self.discarded: Optional[List[tuple]] = None
        self.server_xid: Optional[str] = None
        self.session: Optional[weakref.ReferenceType] = None
        self.last_context: Any = None

    def reset(self) -> None:
        self.open = False
        self.writes = []
        self.savepoints = []
        self.discarded = None
        self.server_xid = None
        self.session = None
        self.last_context = None


def _tables(writes: List[tuple]) -> Dict[str, Optional[int]]:
    out: Dict[str, Optional[int]] = {}
    for table, rows in writes:
        if table in out and out[table] is None:
            continue
        out[table] = None if rows is None else (out.get(table) or 0) + rows
    return out


class CommitGuard(Reporter):
    """The installed guard: its :attr:`problems`, :meth:`assert_clean` and :meth:`remove`."""

    def __init__(
        self,
        engine: Any,
        on_problem: Optional[Callable[[Problem], None]],
        raise_on_problem: bool,
        verify_with_server: bool,
        log: Optional[logging.Logger],
    ) -> None:
        super().__init__(on_problem, raise_on_problem, log)
        self.engine = getattr(engine, "sync_engine", engine)
        self.verify_with_server = verify_with_server
        self._listeners: List[tuple] = []
        # Session events are class-wide: each guard keeps its own entry in session.info.
        self._session_key = f"{_SESSION_KEY}.{id(self)}"

    # --- installation ---------------------------------------------------------------------

    def _install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        engine = self.engine
        for target, name, fn in (
            (engine, "begin", self._on_begin),
            (engine, "after_cursor_execute", self._on_execute),
            (engine, "commit", self._on_commit),
            (engine, "rollback", self._on_rollback),
            (engine, "savepoint", self._on_savepoint),
            (engine, "rollback_savepoint", self._on_rollback_savepoint),
            (engine, "release_savepoint", self._on_release_savepoint),
            (engine.pool, "reset", self._on_reset),
            (engine.pool, "invalidate", self._on_invalidate),
            (Session, "after_begin", self._on_session_begin),
            (Session, "after_rollback", self._on_session_rollback),
            (Session, "after_transaction_end", self._on_session_end),
        ):
            event.listen(target, name, fn)
            self._listeners.append((target, name, fn))

    def remove(self) -> None:
        """Uninstall every listener."""
        from sqlalchemy import event

        for target, name, fn in self._listeners:
            event.remove(target, name, fn)
        self._listeners.clear()

    # --- state ----------------------------------------------------------------------------

    @staticmethod
    def _state(info: Dict[str, Any]) -> _TxState:
        state = info.get(_KEY)
        if state is None:
            state = info[_KEY] = _TxState()
        return state

    def _guarded(self, conn: Any) -> bool:
        return conn.engine is self.engine

    # --- Connection events ----------------------------------------------------------------

    @staticmethod
    def _autocommit(conn: Any) -> bool:
        """Whether ``conn`` runs in autocommit mode (its writes are committed as they happen)."""
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return True
        try:
            return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))
        except Exception:
            return False

    def _on_begin(self, conn: Any) -> None:
        state = self._state(conn.info)
        state.reset()
        state.open = not self._autocommit(conn)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if self._autocommit(conn):
            return
        table = None
        compiled = getattr(context, "compiled", None)
        stmt = getattr(compiled, "statement", None) if compiled is not None else None
        if stmt is not None and getattr(stmt, "is_select", False):
            return
        if (
            stmt is not None
            and getattr(stmt, "is_dml", False)
            and getattr(stmt, "table", None) is not None
        ):
            table = getattr(stmt.table, "fullname", None) or str(stmt.table)
        else:
            info = statement_info(statement)
            if not info.writes:
                return
            table = info.table or info.operation
        rows = getattr(cursor, "rowcount", -1)
        if (
            not (isinstance(rows, int) and rows >= 0)
            and executemany
            and isinstance(parameters, (list, tuple))
        ):
            # Many drivers report no rowcount for executemany; one INSERT per parameter set.
            is_insert = (
                getattr(stmt, "is_insert", False) or statement_info(statement).operation == "INSERT"
            )
            rows = len(parameters) if is_insert else -1
        state = self._state(conn.info)
        state.open = True
        state.writes.append((table, rows if isinstance(rows, int) and rows >= 0 else None))

    def _on_commit(self, conn: Any) -> None:
        self._state(conn.info).reset()

    def _on_rollback(self, conn: Any) -> None:
        state = self._state(conn.info)
        if not state.open:
            return
        if not state.writes and self.verify_with_server:
            state.server_xid = self._server_xid(conn)
        if state.writes or state.server_xid:
            state.discarded = state.writes
        state.writes, state.savepoints, state.open = [], [], False

    def _server_xid(self, conn: Any) -> Optional[str]:
        """``pg_current_xact_id_if_assigned()`` on the raw connection, before its ROLLBACK."""
        try:
            dbapi = conn.connection.dbapi_connection
            cur = dbapi.cursor()
            try:
                cur.execute("SELECT CAST(pg_current_xact_id_if_assigned() AS text)")
                row = cur.fetchone()
            finally:
                cur.close()
            return None if row is None else row[0]
        except Exception:  # aborted transaction, no event loop (GC), a non-PostgreSQL driver
            return None

    def _on_savepoint(self, conn: Any, name: Any) -> None:
        state = self._state(conn.info)
        state.savepoints.append(len(state.writes))

    def _on_rollback_savepoint(self, conn: Any, name: Any, context: Any) -> None:
        state = self._state(conn.info)
        if state.savepoints:
            del state.writes[state.savepoints.pop() :]

    def _on_release_savepoint(self, conn: Any, name: Any, context: Any) -> None:
        state = self._state(conn.info)
        if state.savepoints:
            state.savepoints.pop()

    # --- Session events -------------------------------------------------------------------

    def _on_session_begin(self, session: Any, transaction: Any, connection: Any) -> None:
        if not self._guarded(connection):
            return
        state = self._state(connection.info)
        state.session = weakref.ref(session)
        session.info.setdefault(self._session_key, {"states": [], "found": []})["states"].append(
            state
        )

    def _on_session_rollback(self, session: Any) -> None:
        entry = session.info.get(self._session_key)
        for state in entry["states"] if entry else ():
            state.discarded = None  # an explicit Session.rollback(): intended

    def _on_session_end(self, session: Any, transaction: Any) -> None:
        if transaction.parent is not None:
            return
        entry = session.info.pop(self._session_key, None)
        if entry and entry["found"] and self.raise_on_problem:
            raise UncommittedWritesError(entry["found"])

    # --- pool events ----------------------------------------------------------------------

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        state = record.info.get(_KEY) if record is not None else None
        if state is not None:
            state.reset()

    def _on_reset(self, dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        state = record.info.get(_KEY) if record is not None else None
        if state is None:
            return
        try:
            problem = self._judge(state, dbapi_connection, reset_state)
        finally:
            session = state.session() if state.session is not None else None
            state.reset()
        if problem is None:
            return
        self.report(problem)
        if session is not None:
            entry = session.info.get(self._session_key)
            if entry is not None:
                entry["found"].append(problem)

    def _judge(
        self, state: _TxState, dbapi_connection: Any, reset_state: Any
    ) -> Optional[UncommittedWrites]:
        if not state.open and state.discarded is None and _dbapi_in_transaction(dbapi_connection):
            state.open = True  # a transaction SQLAlchemy never saw begin (a raw DBAPI cursor)
        if state.open:
            writes, xid = state.writes, None
            if (
                not writes
                and self.verify_with_server
                and getattr(reset_state, "asyncio_safe", True)
            ):
                xid = self._server_xid_raw(dbapi_connection)
            if not writes and not xid:
                return None
            return self._problem(
                "returned-open",
                "a connection went back to the pool (or was garbage-collected) with its "
                "transaction still open: the Connection or Session was never closed, committed "
                "or rolled back",
                writes,
                xid,
            )
        if state.discarded is None:
            return None
        if state.session is not None:
            return self._problem(
                "session-closed",
                "a Session was closed without COMMIT (no commit() before close(), or the "
                "`with Session()` block ended)",
                state.discarded,
                state.server_xid,
            )
        if getattr(reset_state, "transaction_was_reset", False):
            return self._problem(
                "connection-closed",
                "a Connection was closed without COMMIT (no commit() before close(), or the "
                "`with engine.connect()` block ended)",
                state.discarded,
                state.server_xid,
            )
        return None

    def _server_xid_raw(self, dbapi_connection: Any) -> Optional[str]:
        try:
            cur = dbapi_connection.cursor()
            try:
                cur.execute("SELECT CAST(pg_current_xact_id_if_assigned() AS text)")
                row = cur.fetchone()
            finally:
                cur.close()
            return None if row is None else row[0]
        except Exception:
            return None

    def _problem(
        self, kind: str, what: str, writes: List[tuple], xid: Optional[str]
    ) -> UncommittedWrites:
        tables = _tables(writes)
        if tables:
            lost = describe_tables(tables)
        else:
            lost = (
                f"writes the guard did not see (transaction {xid} had written: a raw cursor or a "
                "function?)"
            )
        return UncommittedWrites(
            kind=kind,
            message=(
                f"forgotten COMMIT: {what}; its uncommitted writes are rolled back and lost: {lost}"
            ),
            tables=tables,
            xact_id=xid,
        )


def _dbapi_in_transaction(dbapi: Any) -> bool:
    """Whether the DBAPI connection itself says a transaction is open (no round trip): psycopg 3,
    psycopg2 and SQLAlchemy's asyncpg adapter; other drivers: unknown, so no."""
    try:
        info = getattr(dbapi, "info", None)
        status = getattr(info, "transaction_status", None)
        if status is not None:  # psycopg 3: IDLE 0, ACTIVE 1, INTRANS 2, INERROR 3
            return int(status) in (2, 3)
        get_status = getattr(dbapi, "get_transaction_status", None)
        if callable(get_status):  # psycopg2: same numbers
            return int(get_status()) in (2, 3)
        inner = getattr(dbapi, "_connection", None)  # SQLAlchemy's asyncpg adapter
        if inner is not None and callable(getattr(inner, "is_in_transaction", None)):
            return bool(inner.is_in_transaction())
    except Exception:
        pass
    return False


def install_commit_guard(
    engine: Any,
    *,
    on_problem: Optional[Callable[[Problem], None]] = None,
    raise_on_problem: bool = False,
    verify_with_server: bool = True,
    logger: Optional[logging.Logger] = None,
) -> CommitGuard:
    """Watch ``engine`` (an ``Engine`` or ``AsyncEngine``) for transactions that end without
    COMMIT while holding writes. Returns the :class:`CommitGuard` (``guard.remove()`` uninstalls
    it). See the module docs for how it decides and what it costs."""
    guard = CommitGuard(engine, on_problem, raise_on_problem, verify_with_server, logger)
    guard._install()
    return guard
