"""The SQL tokenizer behind the guard's table names and the N+1 key (no database)."""

from pgvigil_audit._sql import describe_exception, error_message, render
from pgvigil_audit._sqltext import analyse, statement_info


def test_operation_table_and_writes() -> None:
    cases = {
        "INSERT INTO public.Contacts (a) VALUES (%s)": ("INSERT", "public.contacts", True),
        'UPDATE "Leads" SET x = 1': ("UPDATE", "Leads", True),
        "delete from sessions where t < now()": ("DELETE", "sessions", True),
        "SELECT * FROM contacts WHERE id = :id": ("SELECT", "contacts", False),
        "COPY contacts (a) FROM STDIN": ("COPY", "contacts", True),
        "COPY contacts TO STDOUT": ("COPY", "contacts", False),
        "WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone": (
            "SELECT",
            "gone",
            True,
        ),
        "WITH a AS (SELECT 1) INSERT INTO archive SELECT * FROM a": ("INSERT", "archive", True),
        "TRUNCATE contacts": ("TRUNCATE", "contacts", True),
        "BEGIN": ("BEGIN", None, False),
        "frobnicate": ("OTHER", None, False),
        "": ("OTHER", None, False),
    }
    for sql, want in cases.items():
        info = analyse(sql)
        assert (info.operation, info.table, info.writes) == want, sql


def test_literals_comments_and_dollar_quotes_never_fool_it() -> None:
    for sql in (
        "SELECT 'INSERT INTO x VALUES (1)' FROM t",
        "SELECT $$ DELETE FROM t $$",
        "SELECT $body$ UPDATE t SET a = 1 $body$ FROM t",
        "-- DELETE FROM t\nSELECT 1",
        "/* INSERT INTO t /* nested */ */ SELECT 1",
        "SELECT E'it\\'s; DELETE FROM t' FROM t",
    ):
        assert not analyse(sql).writes, sql


def test_normalised_text_replaces_literals_and_parameters() -> None:
    a = analyse("SELECT name FROM contacts WHERE id = 42 AND email = 'a@x'")
    b = analyse("select name from contacts  where id = %s and email = %(e)s")
    c = analyse("SELECT name FROM contacts WHERE id = $1 AND email = :email")
    assert a.normalized == "SELECT name FROM contacts WHERE id = ? AND email = ?"
    assert b.normalized.lower() == a.normalized.lower() and c.normalized == a.normalized
    assert analyse("SELECT x::int FROM t").normalized == "SELECT x : : int FROM t"
    assert statement_info("SELECT 1") is statement_info("SELECT 1")  # cached


def test_render_puts_parameters_in_each_drivers_order() -> None:
    sql = "UPDATE t SET a = $2 WHERE id = $1"
    assert render(sql, ["id", "a"], "dollar") == (sql, ["id", "a"])
    assert render(sql, ["id", "a"], "format") == ("UPDATE t SET a = %s WHERE id = %s", ["a", "id"])
    assert render(sql, ["id", "a"], "named") == (
        "UPDATE t SET a = :p2 WHERE id = :p1",
        {"p1": "id", "p2": "a"},
    )


def test_error_messages_are_cut_like_the_rust_writers() -> None:
    assert error_message("a\x00b") == "a\ufffdb"
    assert len(error_message("é" * 2500).encode()) == 4000
    assert len(error_message("x" + "é" * 2500).encode()) == 3999
    try:
        try:
            raise KeyError("row 7")
        except KeyError as e:
            raise ValueError("bad CSV") from e
    except ValueError as e:
        assert describe_exception(e) == "ValueError: bad CSV: KeyError: 'row 7'"


def test_the_ddl_is_the_shipped_one() -> None:
    from support import REPO

    from pgvigil_audit import IMPORT_AUDIT_DDL

    assert IMPORT_AUDIT_DDL in (REPO / "deploy/sql/import_audit.sql").read_text()
