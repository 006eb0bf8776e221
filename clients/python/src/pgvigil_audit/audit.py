"""Record one bulk import in the audit table pgvigil reconciles (DESIGN.md, "Recommended import
audit table"), exactly as pgvigil-timing's ``ImportAudit`` does.

Lifecycle, one statement each on the helper's **own autocommit connection** (so the row survives
a rolled-back import):

1. ``start``: ``INSERT`` the row as ``running`` (target table, source, expected rows,
   ``started_at``/``heartbeat_at``); the import id to stamp on every imported row is handed out.
2. ``attach(tx)``: ``SELECT pg_current_xact_id()`` **inside** the import transaction, then
   ``pg_current_xact_id_if_assigned()`` in it again (the same id proves both ran in one
   transaction, not in autocommit mode); the id is stored as ``xact_id`` so pgvigil can ask
   ``pg_xact_status`` whether the import committed.
3. ``heartbeat()``: ``heartbeat_at = now()`` and the rejected/skipped counts so far; optional
   background heartbeats every ``heartbeat_every`` seconds (a thread for sync code, a task for
   asyncio), serialised with the other statements by a lock.
4. ``finish(reported)`` after the COMMIT returned: ``committed`` with the rows the app believes it
   wrote; ``fail(exc)``: ``failed`` with the error chain; ``cancel(reason)``: ``cancelled``. Every
   update is guarded by ``status = 'running'`` (:class:`NotRunningError` otherwise) and returns
   ``pg_xact_status(xact_id)``: a ``finish()`` whose transaction is still ``in progress`` or was
   ``aborted`` is the forgotten COMMIT, reported at once (see :mod:`pgvigil_audit.problems`).
5. ``SELECT pg_notify('pgvigil_import', '<import_id>')`` after finish/fail/cancel, so a pgvigil
   that LISTENs checks the import at once instead of at its next poll. A failed NOTIFY is logged,
   never raised: the row is already written.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Mapping, Optional

from . import _sql
from ._drivers import (
    AsyncConn,
    SyncConn,
    async_audit_conn,
    async_xact,
    is_async_source,
    sync_audit_conn,
    sync_xact,
)
from .problems import Problem, Reporter, UncommittedWrites, UncommittedWritesError, logger

DEFAULT_HEARTBEAT_EVERY = 60.0


class AuditError(RuntimeError):
    """The audit helper could not do what was asked (database errors are the driver's own)."""


class NotRunningError(AuditError):
    """The audit row is no longer ``running`` (already finished, failed or cancelled, possibly by
    someone else), so the update was not applied."""

    def __init__(self, import_id: str) -> None:
        self.import_id = import_id
        super().__init__(f"import audit: import {import_id} is no longer running")


@dataclass
class _Spec:
    target_table: str
    source: str
    expected: int
    id_column: str
    audit_table: str
    import_id: uuid.UUID


def _spec(
    target_table: str,
    source: str,
    expected: int,
    id_column: str,
    audit_table: str,
    import_id: Optional[uuid.UUID],
) -> _Spec:
    if not id_column or len(id_column.encode()) > 63:
        raise ValueError(f"invalid id column {id_column!r}: 1 to 63 bytes")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise ValueError(f"expected must be a row count (an int >= 0), not {expected!r}")
    return _Spec(
        target_table,
        source,
        expected,
        id_column,
        _sql.quote_table(audit_table),
        import_id or uuid.uuid4(),
    )


def _count(n: Any, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{what} must be an int >= 0, not {n!r}")
    return n


class _Base:
    """State and pure logic shared by the sync and async helpers."""

    def __init__(self, spec: _Spec, reporter: Reporter) -> None:
        self._spec = spec
        self._reporter = reporter
        self.rejected_rows = 0
        self.skipped_rows = 0
        self.written: Optional[int] = None
        self.xact_id: Optional[str] = None
        self.done = False
        self._audit_pid: Optional[int] = None

    @property
    def import_id(self) -> uuid.UUID:
        """The id to stamp on every imported row (the target table's id column)."""
        return self._spec.import_id

    @property
    def id_column(self) -> str:
        return self._spec.id_column

    def record_rejected(self, rows: int) -> None:
        """Rows the import rejected (bad input); written at the next heartbeat/finish and
        subtracted from the expectation by pgvigil."""
        self.rejected_rows += _count(rows, "rejected rows")

    def record_skipped(self, rows: int) -> None:
        """Rows skipped on purpose (duplicates, filters); like :meth:`record_rejected`."""
        self.skipped_rows += _count(rows, "skipped rows")

    def record_written(self, rows: int) -> None:
        """Rows the app wrote; their sum is ``reported_rows`` when the context manager
        finishes the import (``finish()`` takes the number directly)."""
        self.written = (self.written or 0) + _count(rows, "written rows")

    def stamp(self, rows: Iterable[Any]) -> List[Any]:
        """Rows with the import id set in :attr:`id_column`: mappings are copied (``{**row,
        "import_id": id}``), objects (ORM instances) get the attribute set and are returned."""
        out: List[Any] = []
        col, value = self._spec.id_column, self._spec.import_id
        for row in rows:
            if isinstance(row, Mapping):
                out.append({**row, col: value})
            elif isinstance(row, (tuple, list, str, bytes)):
                raise TypeError(
                    "stamp() takes mappings or objects; for tuples add imp.import_id yourself"
                )
            else:
                setattr(row, col, value)
                out.append(row)
        return out

    def _start_params(self) -> list:
        s = self._spec
        return [str(s.import_id), s.target_table, s.id_column, s.source, s.expected]

    def _check_attach(self, xact: str, pid: int, again: Optional[str]) -> None:
        if pid == self._audit_pid:
            raise AuditError(
                "attach(): the import runs on the audit connection; the audit row must be "
                "written on a connection of its own, or a rolled-back import takes it along"
            )
        if again != xact:
            raise AuditError(
                "attach(): the connection is not inside a transaction (autocommit mode?): "
                "call it inside the import's transaction (session.begin(), "
                "conn.transaction(), ...)"
            )

    def _matched(self, rows: list) -> Optional[str]:
        """The import transaction's status from an update's RETURNING, or NotRunningError."""
        if not rows:
            raise NotRunningError(str(self._spec.import_id))
        return rows[0][0]

    def _after_finish(self, xact_status: Optional[str], reported: Optional[int]) -> None:
        if xact_status not in ("in progress", "aborted"):
            return
        s = self._spec
        what = (
            "is still in progress: COMMIT has not returned"
            if xact_status == "in progress"
            else "was rolled back"
        )
        rows = "?" if reported is None else str(reported)
        self._problem(
            UncommittedWrites(
                kind="finish-before-commit",
                message=(
                    f"import {s.import_id} ({s.source} into {s.target_table}) was marked "
                    f"committed with {rows} rows, but its transaction (xact_id {self.xact_id}) "
                    f"{what}. A forgotten COMMIT? pgvigil will report the import as a shortfall."
                ),
                tables={s.target_table: reported},
                xact_id=self.xact_id,
                import_id=str(s.import_id),
            )
        )

    def _problem(self, problem: Problem) -> None:
        self._reporter.report(problem)
        if self._reporter.raise_on_problem:
            raise UncommittedWritesError([problem])

    def _finish_params(self, reported: Optional[int]) -> list:
        return [str(self._spec.import_id), reported, self.rejected_rows, self.skipped_rows]

    def _end_params(self, status: str, message: str) -> list:
        return [
            str(self._spec.import_id),
            status,
            _sql.error_message(message),
            self.rejected_rows,
            self.skipped_rows,
        ]

    def __repr__(self) -> str:
        s = self._spec
        return (
            f"<{type(self).__name__} {s.import_id} {s.target_table} source={s.source!r} "
            f"expected={s.expected} xact_id={self.xact_id} done={self.done}>"
        )


class ImportAudit(_Base):
    """One import's audit row, kept up to date on a sync audit connection. Usually obtained from
    ``with record_import(...) as imp``; :meth:`start` is the explicit form."""

    def __init__(self, conn: SyncConn, spec: _Spec, reporter: Reporter) -> None:
        super().__init__(spec, reporter)
        self._conn = conn
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    @classmethod
    def start(
        cls,
        audit: Any,
        target_table: str,
        *,
        source: str,
        expected: int,
        id_column: str = "import_id",
        audit_table: str = "import_audit",
        import_id: Optional[uuid.UUID] = None,
        reporter: Optional[Reporter] = None,
    ) -> "ImportAudit":
        """Insert the row as ``running`` through ``audit`` (an Engine, an AUTOCOMMIT Connection or
        a psycopg ``Connection(autocommit=True)``; never the import's connection)."""
        spec = _spec(target_table, source, expected, id_column, audit_table, import_id)
        conn = sync_audit_conn(audit)
        self = cls(conn, spec, reporter or Reporter())
        try:
            rows = conn.fetch(_sql.insert_sql(spec.audit_table), self._start_params())
        except BaseException:
            conn.close()
            raise
        self._audit_pid = int(rows[0][0])
        return self

    def _run(self, sql: str, params: list) -> list:
        with self._lock:
            return self._conn.fetch(sql, params)

    def attach(self, tx: Any) -> str:
        """Record the import transaction (``tx``: the Session, Connection or psycopg Connection
        inside the import's transaction) as ``xact_id``; returns the id."""
        xact, pid, again = sync_xact(tx)
        self._check_attach(xact, pid, again)
        self._matched(
            self._run(_sql.attach_sql(self._spec.audit_table), [str(self.import_id), xact])
        )
        self.xact_id = xact
        return xact

    def heartbeat(self) -> None:
        """Tell pgvigil the import is alive (and the rejected/skipped counts so far)."""
        self._matched(
            self._run(
                _sql.heartbeat_sql(self._spec.audit_table),
                [str(self.import_id), self.rejected_rows, self.skipped_rows],
            )
        )

    def finish(self, reported_rows: Optional[int] = None) -> None:
        """The import transaction committed: mark the row ``committed`` with the rows the app
        believes it wrote (``None``: not reported). Call it after COMMIT has returned."""
        if reported_rows is not None:
            _count(reported_rows, "reported rows")
        self._end_beats()
        self.done = True
        status = self._last(
            _sql.finish_sql(self._spec.audit_table), self._finish_params(reported_rows)
        )
        self._after_finish(status, reported_rows)

    def fail(self, error: "BaseException | str") -> None:
        """The import failed: mark the row ``failed`` with the error (an exception is described
        with its causes, a SQLAlchemy error by the driver error it wraps)."""
        message = error if isinstance(error, str) else _sql.describe_exception(error)
        self._end("failed", message)

    def cancel(self, reason: str) -> None:
        """The import was abandoned on purpose: mark the row ``cancelled``."""
        self._end("cancelled", reason)

    def _end(self, status: str, message: str) -> None:
        self._end_beats()
        self.done = True
        self._last(_sql.end_sql(self._spec.audit_table), self._end_params(status, message))

    def _last(self, sql: str, params: list) -> Optional[str]:
        """The final update, then NOTIFY, then the audit connection goes back."""
        try:
            status = self._matched(self._run(sql, params))
            try:
                self._run(_sql.NOTIFY_SQL, [str(self.import_id)])
            except Exception as e:  # the row is written; NOTIFY only makes pgvigil look sooner
                logger.warning(
                    "import %s: NOTIFY %s failed: %s", self.import_id, _sql.NOTIFY_CHANNEL, e
                )
            return status
        finally:
            self.close()

    def close(self) -> None:
        """Stop heartbeats and give the audit connection back (if the helper opened it)."""
        self._end_beats()
        with self._lock:
            self._conn.close()

    def start_heartbeats(self, every: float) -> None:
        """Heartbeat every ``every`` seconds from a daemon thread until the import ends."""

        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    self.heartbeat()
                except Exception as e:
                    logger.warning("import %s: heartbeat failed: %s", self.import_id, e)
                    return

        self._beat = threading.Thread(
            target=beat, name=f"pgvigil-heartbeat-{self.import_id}", daemon=True
        )
        self._beat.start()

    def _end_beats(self) -> None:
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join()
        self._beat = None


class AsyncImportAudit(_Base):
    """The asyncio form of :class:`ImportAudit` (AsyncEngine, asyncpg, psycopg async)."""

    def __init__(self, conn: AsyncConn, spec: _Spec, reporter: Reporter) -> None:
        super().__init__(spec, reporter)
        self._conn = conn
        self._lock = asyncio.Lock()
        self._beat: Optional[asyncio.Task] = None

    @classmethod
    async def start(
        cls,
        audit: Any,
        target_table: str,
        *,
        source: str,
        expected: int,
        id_column: str = "import_id",
        audit_table: str = "import_audit",
        import_id: Optional[uuid.UUID] = None,
        reporter: Optional[Reporter] = None,
    ) -> "AsyncImportAudit":
        """Insert the row as ``running`` through ``audit`` (an AsyncEngine, a psycopg
        ``AsyncConnection(autocommit=True)``, an asyncpg Connection or Pool)."""
        spec = _spec(target_table, source, expected, id_column, audit_table, import_id)
        conn = await async_audit_conn(audit)
        self = cls(conn, spec, reporter or Reporter())
        try:
            rows = await conn.fetch(_sql.insert_sql(spec.audit_table), self._start_params())
        except BaseException:
            await conn.close()
            raise
        self._audit_pid = int(rows[0][0])
        return self

    async def _run(self, sql: str, params: list) -> list:
        async with self._lock:
            return await self._conn.fetch(sql, params)

    async def attach(self, tx: Any) -> str:
        """Like :meth:`ImportAudit.attach`, for an AsyncSession, AsyncConnection, asyncpg or
        psycopg async connection inside the import's transaction."""
        xact, pid, again = await async_xact(tx)
        self._check_attach(xact, pid, again)
        self._matched(
            await self._run(_sql.attach_sql(self._spec.audit_table), [str(self.import_id), xact])
        )
        self.xact_id = xact
        return xact

    async def heartbeat(self) -> None:
        self._matched(
            await self._run(
                _sql.heartbeat_sql(self._spec.audit_table),
                [str(self.import_id), self.rejected_rows, self.skipped_rows],
            )
        )

    async def finish(self, reported_rows: Optional[int] = None) -> None:
        if reported_rows is not None:
            _count(reported_rows, "reported rows")
        await self._end_beats()
        self.done = True
        status = await self._last(
            _sql.finish_sql(self._spec.audit_table), self._finish_params(reported_rows)
        )
        self._after_finish(status, reported_rows)

    async def fail(self, error: "BaseException | str") -> None:
        message = error if isinstance(error, str) else _sql.describe_exception(error)
        await self._end("failed", message)

    async def cancel(self, reason: str) -> None:
        await self._end("cancelled", reason)

    async def _end(self, status: str, message: str) -> None:
        await self._end_beats()
        self.done = True
        await self._last(_sql.end_sql(self._spec.audit_table), self._end_params(status, message))

    async def _last(self, sql: str, params: list) -> Optional[str]:
        try:
            status = self._matched(await self._run(sql, params))
            try:
                async with self._lock:
                    await self._conn.execute(_sql.NOTIFY_SQL, [str(self.import_id)])
            except Exception as e:
                logger.warning(
                    "import %s: NOTIFY %s failed: %s", self.import_id, _sql.NOTIFY_CHANNEL, e
                )
            return status
        finally:
            await self.close()

    async def close(self) -> None:
        await self._end_beats()
        async with self._lock:
            await self._conn.close()

    def start_heartbeats(self, every: float) -> None:
        async def beat() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.heartbeat()
                except Exception as e:
                    logger.warning("import %s: heartbeat failed: %s", self.import_id, e)
                    return

        self._beat = asyncio.get_running_loop().create_task(beat())

    async def _end_beats(self) -> None:
        task, self._beat = self._beat, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class record_import:  # noqa: N801 - used like a function: `with record_import(...) as imp`
    """Record one import around a block: ``with`` for sync drivers, ``async with`` for asyncio.

    ::

        async with record_import(engine, "contacts", source="contacts.csv",
                                 expected=len(rows)) as imp:
            async with AsyncSession(engine) as session, session.begin():
                await imp.attach(session)
                await session.execute(insert(Contact), imp.stamp(rows))
                imp.record_written(len(rows))
        # the block ended without an exception: the transaction committed, the row is
        # `committed` with reported_rows = len(rows)

    Leaving the block normally finishes the import (``reported_rows`` = the sum of
    :meth:`~ImportAudit.record_written`, or NULL if never called), unless it was finished, failed
    or cancelled inside; an exception fails it with the exception's text and propagates
    unchanged; ``KeyboardInterrupt``, ``SystemExit`` and task cancellation cancel it. Commit
    *inside* the block: leaving it is the moment the app says "committed".

    Parameters: ``db`` is where the audit row is written (see :mod:`pgvigil_audit._drivers`:
    an Engine/AsyncEngine gives the helper a pooled connection of its own, in AUTOCOMMIT);
    ``target_table`` as PostgreSQL resolves it (``contacts``, ``crm."Contacts"``); ``source`` the
    file or feed name; ``expected`` the rows the source holds. ``heartbeat_every`` seconds
    between background heartbeats (``None``: only explicit ``heartbeat()`` calls);
    ``on_problem`` / ``raise_on_problem`` as in :class:`~pgvigil_audit.problems.Reporter`.
    """

    def __init__(
        self,
        db: Any,
        target_table: str,
        *,
        source: str,
        expected: int,
        id_column: str = "import_id",
        audit_table: str = "import_audit",
        import_id: Optional[uuid.UUID] = None,
        heartbeat_every: Optional[float] = DEFAULT_HEARTBEAT_EVERY,
        on_problem: Optional[Callable[[Problem], None]] = None,
        raise_on_problem: bool = False,
    ) -> None:
        self._db = db
        self._args = dict(
            source=source,
            expected=expected,
            id_column=id_column,
            audit_table=audit_table,
            import_id=import_id,
            reporter=Reporter(on_problem, raise_on_problem),
        )
        self._target_table = target_table
        self._every = heartbeat_every
        self._sync: Optional[ImportAudit] = None
        self._async: Optional[AsyncImportAudit] = None

    def __enter__(self) -> ImportAudit:
        if is_async_source(self._db):
            raise TypeError(
                f"{type(self._db).__qualname__} is an asyncio driver: use "
                "`async with record_import(...)`"
            )
        self._sync = ImportAudit.start(self._db, self._target_table, **self._args)
        if self._every:
            self._sync.start_heartbeats(self._every)
        return self._sync

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        imp = self._sync
        assert imp is not None
        if imp.done:
            imp.close()
            return
        if exc is None:
            imp.finish(imp.written)
            return
        try:
            if isinstance(exc, Exception):
                imp.fail(exc)
            else:
                imp.cancel(f"cancelled: {_sql.describe_exception(exc)}")
        except Exception as e:  # never hide the import's own exception behind the audit's
            logger.error("import %s: could not record the failure: %s", imp.import_id, e)
            imp.close()

    async def __aenter__(self) -> AsyncImportAudit:
        if not is_async_source(self._db):
            raise TypeError(
                f"{type(self._db).__qualname__} is a sync driver object: use "
                "`with record_import(...)`"
            )
        self._async = await AsyncImportAudit.start(self._db, self._target_table, **self._args)
        if self._every:
            self._async.start_heartbeats(self._every)
        return self._async

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        imp = self._async
        assert imp is not None
        if imp.done:
            await imp.close()
            return
        if exc is None:
            await imp.finish(imp.written)
            return
        try:
            if isinstance(exc, Exception):
                await imp.fail(exc)
            else:
                await imp.cancel(f"cancelled: {_sql.describe_exception(exc)}")
        except Exception as e:
            logger.error("import %s: could not record the failure: %s", imp.import_id, e)
            await imp.close()


def create_table_sql(audit_table: str = "import_audit") -> str:
    """DESIGN.md's DDL (``CREATE TABLE IF NOT EXISTS``) for ``audit_table``."""
    return _sql.create_table_sql(_sql.quote_table(audit_table))
