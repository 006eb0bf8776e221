//! Statement arguments: SQL text, [`TimedStatement`]s and raw tokio-postgres statements.

use std::fmt;

use tokio_postgres::Statement;
use tokio_postgres::types::Type;

use super::__private::Target;
use super::sealed;
use crate::summary::QuerySummary;

/// A statement argument: SQL text (`&str`, `String`), a [`TimedStatement`] or a raw
/// [`tokio_postgres::Statement`] (recorded as `unknown` unless [`named`](crate::GenericTimedClient::named),
/// since its SQL text is not available).
pub trait ToTimedStatement: sealed::Sealed + Sync {
    #[doc(hidden)]
    fn __target(&self) -> Target<'_>;
}

impl sealed::Sealed for str {}
impl ToTimedStatement for str {
    fn __target(&self) -> Target<'_> {
        Target::Sql(self)
    }
}
impl sealed::Sealed for String {}
impl ToTimedStatement for String {
    fn __target(&self) -> Target<'_> {
        Target::Sql(self)
    }
}
impl sealed::Sealed for Statement {}
impl ToTimedStatement for Statement {
    fn __target(&self) -> Target<'_> {
        Target::Raw(self)
    }
}
impl sealed::Sealed for TimedStatement {}
impl ToTimedStatement for TimedStatement {
    fn __target(&self) -> Target<'_> {
        Target::Prepared(&self.statement, &self.summary)
    }
}

/// A prepared statement that remembers its (bounded) name, so executing it records under the
/// same label as its SQL text would.
#[derive(Clone)]
pub struct TimedStatement {
    statement: Statement,
    summary: QuerySummary,
}

impl fmt::Debug for TimedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedStatement")
            .field("summary", &self.summary.summary())
            .field("statement", &self.statement)
            .finish()
    }
}

impl TimedStatement {
    /// Pair a tokio-postgres statement with a summary (see [`Recorder::summary_for`](crate::Recorder::summary_for)).
    pub fn new(statement: Statement, summary: QuerySummary) -> Self {
        Self { statement, summary }
    }

    /// The statement name and operation recorded when it runs.
    pub fn summary(&self) -> &QuerySummary {
        &self.summary
    }

    /// The tokio-postgres statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// Parameter types.
    pub fn params(&self) -> &[Type] {
        self.statement.params()
    }

    /// Result columns.
    pub fn columns(&self) -> &[tokio_postgres::Column] {
        self.statement.columns()
    }

    /// The tokio-postgres statement.
    pub fn into_inner(self) -> Statement {
        self.statement
    }
}
