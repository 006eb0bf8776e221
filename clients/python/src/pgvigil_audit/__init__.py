"""pgvigil-audit: record bulk imports for pgvigil from Python, and catch the forgotten COMMIT in
the app itself.

* :func:`record_import` / :class:`ImportAudit` / :class:`AsyncImportAudit`: the audit row pgvigil
  reconciles (DESIGN.md's table, the same rows pgvigil-timing's ``ImportAudit`` writes), on the
  helper's own autocommit connection, for SQLAlchemy 2 (sync and asyncio), psycopg 3 and asyncpg.
* :func:`install_commit_guard`: the opt-in SQLAlchemy hook that reports a Session or Connection
  closed, returned to the pool or garbage-collected with uncommitted writes.
* :func:`install_n_plus_one`: N+1 detection per unit of work for SQLAlchemy.

No runtime dependency: each driver is imported only when the app hands one in.
"""

from ._drivers import AuditConnectionError
from ._sql import IMPORT_AUDIT_DDL, MAX_ERROR_MESSAGE_LEN, NOTIFY_CHANNEL
from .audit import (
    AsyncImportAudit,
    AuditError,
    ImportAudit,
    NotRunningError,
    create_table_sql,
    record_import,
)
from .guard import CommitGuard, install_commit_guard
from .nplusone import NPlusOneDetector, install_n_plus_one
from .problems import NPlusOne, Reporter, UncommittedWrites, UncommittedWritesError

__all__ = [
    "IMPORT_AUDIT_DDL",
    "MAX_ERROR_MESSAGE_LEN",
    "NOTIFY_CHANNEL",
    "AsyncImportAudit",
    "AuditConnectionError",
    "AuditError",
    "CommitGuard",
    "ImportAudit",
    "NPlusOne",
    "NPlusOneDetector",
    "NotRunningError",
    "Reporter",
    "UncommittedWrites",
    "UncommittedWritesError",
    "create_table_sql",
    "install_commit_guard",
    "install_n_plus_one",
    "record_import",
]

__version__ = "0.1.0"
