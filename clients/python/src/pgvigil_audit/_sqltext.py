"""What a SQL statement is, without running it: operation, main table, whether it writes, and
its normalised text (literals and parameters replaced by ``?``).

A small tokenizer in the spirit of pgvigil-timing's ``summary`` module: it skips whitespace and
comments (``--``, nested ``/* */``), reads string literals (``'…'``, ``E'…'``, dollar quotes
``$tag$…$tag$``), quoted identifiers and parameters (``$1``, ``%s``, ``%(name)s``, ``:name``), so a
``'INSERT INTO x'`` literal or a commented-out statement never fools it. No regular expression
looks at SQL text.

Results are cached by statement text (at most :data:`CACHE_ENTRIES` statements of at most
:data:`CACHE_MAX_LEN` characters; the cache is cleared when full), so the per-statement cost is
paid once, off the hot path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

CACHE_ENTRIES = 2048
CACHE_MAX_LEN = 2048
_MAX_TOKENS = 512

_WRITE_OPERATIONS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE"})
_CONTROL = frozenset(
    {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE"}
)

# The operation keywords pgvigil-timing recognises (its summary module); anything else is OTHER.
_OPERATIONS = frozenset(
    "SELECT INSERT UPDATE DELETE MERGE COPY VALUES TABLE CALL DO BEGIN START COMMIT END ROLLBACK "
    "ABORT SAVEPOINT RELEASE PREPARE EXECUTE DEALLOCATE SET RESET SHOW CREATE ALTER DROP TRUNCATE "
    "GRANT REVOKE VACUUM ANALYZE EXPLAIN LOCK LISTEN UNLISTEN NOTIFY DECLARE FETCH MOVE CLOSE "
    "DISCARD REFRESH REINDEX CLUSTER COMMENT CHECKPOINT".split()
)

# Token kinds.
WORD, QUOTED, OPEN, CLOSE, DOT, SEMI, LITERAL, PARAM, STAR, COMMA, OTHER = range(11)


@dataclass(frozen=True)
class StatementInfo:
    """What one statement is."""

    operation: str
    """First keyword, upper case (``SELECT``, ``INSERT``, …), or ``OTHER``."""
    table: Optional[str]
    """Main table as written (lower-cased unless quoted), e.g. ``public.contacts``."""
    writes: bool
    """Whether it can change rows: INSERT/UPDATE/DELETE/MERGE/TRUNCATE, ``COPY … FROM``, or a
    data-modifying CTE (``WITH x AS (DELETE …) SELECT …``)."""
    normalized: str
    """The statement with literals and parameters replaced by ``?``, whitespace collapsed."""

    @property
    def summary(self) -> str:
        """``OPERATION table``, pgvigil-timing's ``db.query.summary`` shape."""
        return f"{self.operation} {self.table}" if self.table else self.operation

    @property
    def is_control(self) -> bool:
        """BEGIN, COMMIT, ROLLBACK, SAVEPOINT, …: transaction control, not a query."""
        return self.operation in _CONTROL


Token = Tuple[int, str]


def tokenize(sql: str) -> List[Token]:
    """Tokens of ``sql`` (at most 512): ``(kind, text)`` pairs."""
    out: List[Token] = []
    i, n = 0, len(sql)
    while i < n and len(out) < _MAX_TOKENS:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "'":
            i = _skip_quoted(sql, i + 1, "'")
            out.append((LITERAL, "?"))
        elif c == '"':
            j = _skip_quoted(sql, i + 1, '"')
            out.append((QUOTED, sql[i + 1 : j - 1].replace('""', '"')))
            i = j
        elif c == "$":
            i = _dollar(sql, i, out)
        elif c in "Ee" and sql.startswith("'", i + 1):
            i = _skip_escape_string(sql, i + 2)
            out.append((LITERAL, "?"))
        elif c.isalpha() or c == "_" or ord(c) >= 0x80:
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$" or ord(sql[j]) >= 0x80):
                j += 1
            out.append((WORD, sql[i:j]))
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            out.append((LITERAL, "?"))
            i = j
        elif c == "%" and i + 1 < n and (sql[i + 1] == "s" or sql[i + 1] == "("):
            # psycopg / DB-API "format" and "pyformat" parameters.
            if sql[i + 1] == "s":
                i += 2
            else:
                j = sql.find(")", i)
                i = n if j < 0 else j + 2
            out.append((PARAM, "?"))
        elif (
            c == ":"
            and i + 1 < n
            and (sql[i + 1].isalpha() or sql[i + 1] == "_")
            and (i == 0 or sql[i - 1] != ":")
        ):
            # SQLAlchemy / DB-API "named" parameter; `::type` casts are not parameters.
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            out.append((PARAM, "?"))
            i = j
        else:
            kind = {"(": OPEN, ")": CLOSE, ".": DOT, ";": SEMI, "*": STAR, ",": COMMA}.get(c, OTHER)
            out.append((kind, c))
            i += 1
    return out


def _skip_quoted(sql: str, i: int, delim: str) -> int:
    """Index just past the closing ``delim`` (doubled delimiters are escapes)."""
    n = len(sql)
    while i < n:
        if sql[i] == delim:
            if i + 1 < n and sql[i + 1] == delim:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _skip_escape_string(sql: str, i: int) -> int:
    n = len(sql)
    while i < n:
        if sql[i] == "\\":
            i += 2
        elif sql[i] == "'":
            if i + 1 < n and sql[i + 1] == "'":
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _dollar(sql: str, i: int, out: List[Token]) -> int:
    """``$1`` parameter or ``$tag$…$tag$`` string starting at ``sql[i]``."""
    n, j = len(sql), i + 1
    while j < n and (sql[j].isalnum() or sql[j] == "_"):
        j += 1
    tag_body = sql[i + 1 : j]
    if j < n and sql[j] == "$" and not (tag_body and tag_body.isdigit()):
        tag = sql[i : j + 1]
        end = sql.find(tag, j + 1)
        out.append((LITERAL, "?"))
        return n if end < 0 else end + len(tag)
    out.append((PARAM, "?"))
    return j


def _is_kw(tok: Token, *kws: str) -> bool:
    return tok[0] == WORD and tok[1].upper() in kws


def _relation(toks: List[Token], i: int) -> Optional[str]:
    while i < len(toks) and _is_kw(toks[i], "ONLY", "LATERAL", "TABLE", "IF", "EXISTS", "NOT"):
        i += 1
    parts: List[str] = []
    while i < len(toks):
        kind, text = toks[i]
        if kind == WORD:
            parts.append(text.lower())
        elif kind == QUOTED:
            parts.append(text)
        else:
            break
        if i + 1 < len(toks) and toks[i + 1][0] == DOT:
            i += 2
        else:
            break
    return ".".join(parts) if parts else None


def _find_at_depth(toks: List[Token], start: int, depth: int, *kws: str) -> Optional[int]:
    d = depth
    for i in range(start, len(toks)):
        kind = toks[i][0]
        if kind == OPEN:
            d += 1
        elif kind == CLOSE:
            d -= 1
            if d < depth:
                return None
        elif kind == SEMI and d == depth:
            return None
        elif d == depth and _is_kw(toks[i], *kws):
            return i
    return None


def _select_target(toks: List[Token], at: int, depth: int) -> Optional[str]:
    frm = _find_at_depth(toks, at + 1, depth, "FROM")
    if frm is None or frm + 1 >= len(toks):
        return None
    if toks[frm + 1][0] == OPEN:
        sel = _find_at_depth(toks, frm + 2, depth + 1, "SELECT")
        return None if sel is None else _select_target(toks, sel, depth + 1)
    return _relation(toks, frm + 1)


def analyse(sql: str) -> StatementInfo:
    """Describe one statement (uncached; see :func:`statement_info`)."""
    toks = tokenize(sql)
    normalized = " ".join(t[1] if t[0] != QUOTED else '"' + t[1] + '"' for t in toks)
    i = depth = 0
    while i < len(toks) and toks[i][0] == OPEN:
        i, depth = i + 1, depth + 1
    cte_writes = False
    if i < len(toks) and _is_kw(toks[i], "WITH"):
        d, j, found = depth, i + 1, None
        while j < len(toks):
            kind = toks[j][0]
            if kind == OPEN:
                d += 1
            elif kind == CLOSE:
                d -= 1
            elif d > depth and _is_kw(toks[j], "INSERT", "UPDATE", "DELETE", "MERGE"):
                cte_writes = True
            elif d == depth and _is_kw(
                toks[j], "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"
            ):
                found = j
                break
            j += 1
        if found is None:
            return StatementInfo("OTHER", None, cte_writes, normalized)
        i = found
    if i >= len(toks) or toks[i][0] != WORD:
        return StatementInfo("OTHER", None, False, normalized)
    op = toks[i][1].upper()
    if op not in _OPERATIONS:
        return StatementInfo("OTHER", None, False, normalized)
    table: Optional[str] = None
    writes = op in _WRITE_OPERATIONS or cte_writes
    if op == "SELECT":
        table = _select_target(toks, i, depth)
    elif op in ("INSERT", "MERGE"):
        at = _find_at_depth(toks, i + 1, depth, "INTO")
        table = None if at is None else _relation(toks, at + 1)
    elif op == "DELETE":
        at = _find_at_depth(toks, i + 1, depth, "FROM")
        table = None if at is None else _relation(toks, at + 1)
    elif op in ("UPDATE", "COPY", "TRUNCATE", "TABLE", "CALL", "LOCK"):
        if i + 1 < len(toks) and toks[i + 1][0] != OPEN:
            table = _relation(toks, i + 1)
        if op == "COPY":
            writes = _find_at_depth(toks, i + 1, depth, "FROM") is not None
        elif op == "CALL":
            writes = True  # a procedure may write; the guard cannot see inside
    return StatementInfo(op, table, writes, normalized)


_cache: Dict[str, StatementInfo] = {}
_cache_lock = threading.Lock()


def statement_info(sql: str) -> StatementInfo:
    """:func:`analyse`, cached by statement text."""
    hit = _cache.get(sql)
    if hit is not None:
        return hit
    info = analyse(sql)
    if len(sql) <= CACHE_MAX_LEN:
        with _cache_lock:
            if len(_cache) >= CACHE_ENTRIES:
                _cache.clear()
            _cache[sql] = info
    return info
