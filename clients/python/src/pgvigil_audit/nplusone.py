"""N+1 detection for SQLAlchemy, with pgvigil-timing's semantics.

Within one *unit of work* (a request, a job: ``with detector.unit_of_work("GET /contacts"):``,
sync or async; the unit follows the code through ``contextvars``, so concurrent asyncio tasks
and threads each have their own), every statement execution is counted by its normalised text
(literals and parameters replaced by ``?``; SQLAlchemy's ``before_cursor_execute`` event). When
the unit ends, each statement that ran **more than** ``threshold`` times (default 10) is reported
once, with its final count: a WARNING on logger ``pgvigil_audit``, the optional callback, and
:attr:`NPlusOneDetector.problems` (see :mod:`pgvigil_audit.problems`).

What counts as one execution: one ``execute()`` (the batches SQLAlchemy's ``insertmanyvalues``
sends for one bulk INSERT count once, as does one ``executemany``). Transaction control (BEGIN,
COMMIT, SAVEPOINT, ...) is not counted. Outside any unit of work nothing is counted: the cost is
one ``ContextVar.get`` per statement; inside, one cached text lookup and a dict increment.
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ._sqltext import statement_info
from .problems import NPlusOne, Problem, Reporter

DEFAULT_THRESHOLD = 10


@dataclass
class _Unit:
    name: str
    counts: Dict[str, List[Any]] = field(default_factory=dict)  # normalized -> [count, summary]
    last_context: Any = None


_current: contextvars.ContextVar[Optional[Tuple["NPlusOneDetector", _Unit]]] = (
    contextvars.ContextVar("pgvigil_audit_unit_of_work", default=None)
)


class NPlusOneDetector(Reporter):
    """Counts statements per unit of work on one engine. Obtained from
    :func:`install_n_plus_one`."""

    def __init__(
        self,
        engine: Any,
        threshold: int,
        on_problem: Optional[Callable[[Problem], None]],
        log: Optional[logging.Logger],
    ) -> None:
        if not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"threshold must be an int >= 1, not {threshold!r}")
        super().__init__(on_problem, False, log)
        self.engine = getattr(engine, "sync_engine", engine)
        self.threshold = threshold

    def _install(self) -> None:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._on_execute)

    def remove(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._on_execute)

    @contextmanager
    def unit_of_work(self, name: str) -> Iterator[None]:
        """Count the statements run inside the block as one unit (nested units each count their
        own statements; the innermost is charged)."""
        unit = _Unit(name)
        token = _current.set((self, unit))
        try:
            yield
        finally:
            _current.reset(token)
            self._finish(unit)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        current = _current.get()
        if current is None or current[0] is not self:
            return
        unit = current[1]
        if context is not None and context is unit.last_context:
            return  # a further batch of the same execute()
        unit.last_context = context
        info = statement_info(statement)
        if info.is_control:
            return
        entry = unit.counts.get(info.normalized)
        if entry is None:
            unit.counts[info.normalized] = [1, info.summary]
        else:
            entry[0] += 1

    def _finish(self, unit: _Unit) -> None:
        for statement, (count, summary) in unit.counts.items():
            if count > self.threshold:
                self.report(
                    NPlusOne(
                        statement=statement,
                        summary=summary,
                        count=count,
                        unit=unit.name,
                        threshold=self.threshold,
                        message=(
                            f"N+1: {summary} ran {count} times in {unit.name} (threshold "
                            f"{self.threshold}): {statement[:200]}; load the rows in one query "
                            "(a join, selectinload, or = ANY(:ids))"
                        ),
                    )
                )


def install_n_plus_one(
    engine: Any,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    on_problem: Optional[Callable[[Problem], None]] = None,
    logger: Optional[logging.Logger] = None,
) -> NPlusOneDetector:
    """Count statement executions per unit of work on ``engine`` (``Engine`` or
    ``AsyncEngine``); mark units with ``detector.unit_of_work(name)``."""
    detector = NPlusOneDetector(engine, threshold, on_problem, logger)
    detector._install()
    return detector
