"""What the helpers report, and how: a ``logging`` warning always, an optional callback, and an
exception for tests.

Three things report here: the audit helper when ``finish()`` runs before the import's COMMIT has
returned (:class:`UncommittedWrites` with ``kind="finish-before-commit"``), the SQLAlchemy
forgotten-COMMIT guard (:mod:`pgvigil_audit.guard`), and the N+1 detector
(:mod:`pgvigil_audit.nplusone`, :class:`NPlusOne`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

logger = logging.getLogger("pgvigil_audit")


@dataclass(frozen=True)
class UncommittedWrites:
    """Writes that were (or are about to be) lost because their transaction never committed."""

    kind: str
    """``session-closed``, ``connection-closed``, ``returned-open`` (a connection returned to the
    pool, or garbage-collected, with its transaction still open) or ``finish-before-commit``."""
    message: str
    """The whole story in one line, as logged."""
    tables: Dict[str, Optional[int]] = field(default_factory=dict)
    """Rows written per table (``None``: the driver did not say how many)."""
    xact_id: Optional[str] = None
    """The transaction's id, when the server was asked (``pg_current_xact_id_if_assigned()``) or
    the import attached it."""
    import_id: Optional[str] = None


@dataclass(frozen=True)
class NPlusOne:
    """One statement run more than the threshold times within one unit of work."""

    statement: str
    """Normalised statement text (literals and parameters are ``?``)."""
    summary: str
    """``OPERATION table``, as in pgvigil-timing's ``db_query_summary``."""
    count: int
    unit: str
    """The unit of work's name."""
    threshold: int
    message: str


Problem = Union[UncommittedWrites, NPlusOne]


class UncommittedWritesError(RuntimeError):
    """Raised (where the caller can see it) when a problem is found with ``raise_on_problem``,
    and by :meth:`Reporter.assert_clean`."""

    def __init__(self, problems: List[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in problems) or "no problems")


def describe_tables(tables: Dict[str, Optional[int]]) -> str:
    if not tables:
        return "tables unknown"
    return ", ".join(
        f"{t}: {n} row{'s' if n != 1 else ''}" if n is not None else f"{t}: ? rows"
        for t, n in sorted(tables.items())
    )


class Reporter:
    """Where problems go. Every problem is logged at WARNING on logger ``pgvigil_audit`` (or the
    one given), passed to ``on_problem`` if set, and kept in :attr:`problems` (the newest 1000)
    for tests; with ``raise_on_problem`` an :class:`UncommittedWritesError` is raised where the
    code that detected it runs in the caller's call stack."""

    def __init__(
        self,
        on_problem: Optional[Callable[[Problem], None]] = None,
        raise_on_problem: bool = False,
        log: Optional[logging.Logger] = None,
    ) -> None:
        self.on_problem = on_problem
        self.raise_on_problem = raise_on_problem
        self.log = log or logger
        self.problems: List[Problem] = []

    def report(self, problem: Problem) -> None:
        self.log.warning("%s", problem.message)
        self.problems.append(problem)
        del self.problems[:-1000]
        if self.on_problem is not None:
            self.on_problem(problem)

    def clear(self) -> None:
        self.problems.clear()

    def assert_clean(self) -> None:
        """Raise :class:`UncommittedWritesError` if any problem was reported (then forget them)."""
        if self.problems:
            found, self.problems = self.problems, []
            raise UncommittedWritesError(found)
