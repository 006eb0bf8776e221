"""The audit table's DDL and the statements that write it, with parameters rendered for each
driver's placeholder style.

These are the statements pgvigil-timing's ``ImportAudit`` runs (crates/pgvigil-timing/src/audit.rs),
column for column, so a row written from Python and one written from Rust are the same row. Casts
are spelled ``CAST(x AS type)`` rather than ``x::type`` because SQLAlchemy's ``text()`` would read
``:p1::text`` as a parameter named ``p1`` followed by garbage, and every value is passed as text or
an integer so no driver needs a type adapter (psycopg2 without ``register_uuid``, asyncpg's
strict codecs).
"""

from __future__ import annotations

import re
from typing import Any, List, Sequence, Tuple

#: DESIGN.md's audit table, identical to pgvigil-timing's ``IMPORT_AUDIT_DDL`` and to
#: ``deploy/sql/import_audit.sql`` (a test checks both).
IMPORT_AUDIT_DDL = """\
CREATE TABLE IF NOT EXISTS import_audit (
  import_id     uuid PRIMARY KEY,
  target_table  regclass NOT NULL,
  id_column     name NOT NULL DEFAULT 'import_id',
  source_name   text NOT NULL,
  expected_rows bigint NOT NULL CHECK (expected_rows >= 0),
  rejected_rows bigint NOT NULL DEFAULT 0,
  skipped_rows  bigint NOT NULL DEFAULT 0,
  reported_rows bigint,
  xact_id       xid8,
  status        text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending','running','committed','failed','cancelled')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz, heartbeat_at timestamptz, finished_at timestamptz,
  error_message text
)"""

#: The channel pgvigil LISTENs on; the payload is the import id.
NOTIFY_CHANNEL = "pgvigil_import"

#: Longest ``error_message`` written, in UTF-8 bytes (pgvigil-timing's ``MAX_ERROR_MESSAGE_LEN``).
MAX_ERROR_MESSAGE_LEN = 4000

_WHERE = "WHERE import_id = CAST(CAST($1 AS text) AS uuid) AND status = 'running' "
# What every update returns: that it matched (a row at all) and the import transaction's fate.
_RETURNING = "RETURNING CAST(pg_xact_status(xact_id) AS text)"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """``table`` or ``schema.table`` as written (not case-folded), quoted; like Rust's
    ``AuditTable::new``."""
    parts = name.split(".")
    if len(parts) > 2 or any(not p or len(p.encode()) > 63 for p in parts):
        raise ValueError(
            f"invalid audit table name {name!r}: give `table` or `schema.table`, "
            "each part 1 to 63 bytes"
        )
    return ".".join(quote_ident(p) for p in parts)


def create_table_sql(table: str) -> str:
    return IMPORT_AUDIT_DDL.replace("import_audit", table, 1)


def insert_sql(table: str) -> str:
    return (
        f"INSERT INTO {table} (import_id, target_table, id_column, source_name, expected_rows, "
        "status, started_at, heartbeat_at) VALUES (CAST(CAST($1 AS text) AS uuid), "
        "CAST(CAST($2 AS text) AS regclass), CAST(CAST($3 AS text) AS name), CAST($4 AS text), "
        "CAST($5 AS bigint), 'running', now(), now()) RETURNING pg_backend_pid()"
    )


def attach_sql(table: str) -> str:
    return (
        f"UPDATE {table} SET xact_id = CAST(CAST($2 AS text) AS xid8), heartbeat_at = now() "
        + _WHERE
        + _RETURNING
    )


def heartbeat_sql(table: str) -> str:
    return (
        f"UPDATE {table} SET heartbeat_at = now(), rejected_rows = CAST($2 AS bigint), "
        "skipped_rows = CAST($3 AS bigint) " + _WHERE + _RETURNING
    )


def finish_sql(table: str) -> str:
    return (
        f"UPDATE {table} SET status = 'committed', reported_rows = CAST($2 AS bigint), "
        "rejected_rows = CAST($3 AS bigint), skipped_rows = CAST($4 AS bigint), "
        "heartbeat_at = now(), finished_at = now() " + _WHERE + _RETURNING
    )


def end_sql(table: str) -> str:
    return (
        f"UPDATE {table} SET status = CAST($2 AS text), error_message = CAST($3 AS text), "
        "rejected_rows = CAST($4 AS bigint), skipped_rows = CAST($5 AS bigint), "
        "heartbeat_at = now(), finished_at = now() " + _WHERE + _RETURNING
    )


NOTIFY_SQL = f"SELECT pg_notify('{NOTIFY_CHANNEL}', CAST($1 AS text))"
#: Run inside the import transaction: assigns it a transaction id, and tells which session it is.
XACT_SQL = "SELECT CAST(pg_current_xact_id() AS text), pg_backend_pid()"
#: Run right after XACT_SQL: the same id if (and only if) both ran in one transaction.
XACT_AGAIN_SQL = "SELECT CAST(pg_current_xact_id_if_assigned() AS text)"

_PLACEHOLDER = re.compile(r"\$(\d+)")


def render(sql: str, params: Sequence[Any], style: str) -> Tuple[str, Any]:
    """Our ``$n`` statement in a driver's placeholder style: ``dollar`` (asyncpg), ``format``
    (psycopg, psycopg2: ``%s``) or ``named`` (SQLAlchemy ``text()``: ``:pN``, params as a dict).

    Only ever applied to the fixed statements of this module, which hold no literal ``$``,
    ``%`` or ``:``; for ``format``, the parameters are put in the order the ``$n`` appear.
    """
    if style == "dollar":
        return sql, list(params)
    if style == "format":
        order = [int(m.group(1)) for m in _PLACEHOLDER.finditer(sql)]
        return _PLACEHOLDER.sub("%s", sql), [params[n - 1] for n in order]
    if style == "named":
        return _PLACEHOLDER.sub(lambda m: f":p{m.group(1)}", sql), {
            f"p{i + 1}": v for i, v in enumerate(params)
        }
    raise ValueError(f"unknown placeholder style {style!r}")


def error_message(message: str) -> str:
    """``message`` as stored: NUL characters (which PostgreSQL text cannot hold) replaced, cut
    to :data:`MAX_ERROR_MESSAGE_LEN` UTF-8 bytes at a character boundary."""
    message = message.replace("\x00", "\ufffd")
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_ERROR_MESSAGE_LEN:
        return data.decode("utf-8")
    return data[:MAX_ERROR_MESSAGE_LEN].decode("utf-8", "ignore")


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` and of its causes, like the Rust writer's error chain.

    A SQLAlchemy ``DBAPIError`` is described by the driver error it wraps: its own text adds the
    SQL and *all its parameters* (for an import, thousands of rows of personal data).
    """
    parts: List[str] = []
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < 8:
        seen.add(id(cur))
        orig = getattr(cur, "orig", None)
        if isinstance(orig, BaseException) and type(cur).__module__.startswith("sqlalchemy"):
            parts.append(f"{type(cur).__name__}: {_one_line(orig)}")
            cur = orig.__cause__ or orig.__context__
            continue
        text = _one_line(cur)
        parts.append(f"{type(cur).__name__}: {text}" if text else type(cur).__name__)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return ": ".join(parts)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
