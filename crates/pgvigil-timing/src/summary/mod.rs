//! Statement names: a bounded `"OPERATION table"` summary derived from SQL text.
//!
//! Every label value this crate emits goes through a `Summarizer`, which guarantees two bounds:
//!
//! * **label cardinality**: at most `max_names` distinct summaries (derived *or* caller-provided via
//!   `.named(..)`) are ever handed out; once that many exist, any new one becomes
//!   [`OTHER_SUMMARY`]. The operation name comes from a fixed keyword list, so it is bounded by
//!   construction.
//! * **memory**: the SQL-text → summary cache holds at most [`SQL_CACHE_ENTRIES`] statements of at
//!   most [`SQL_CACHE_MAX_LEN`] bytes each; when it fills up it is cleared (statements are cheap to
//!   re-summarize, and a workload with that many distinct SQL strings is inlining literals anyway).
//!
//! The summary follows OpenTelemetry's `db.query.summary` shape: operation keyword, then the main
//! target table, e.g. `SELECT users`, `INSERT public.orders`, `UPDATE "Campaign"`.
//!
//! The same single pass of the tokenizer (on a cache miss only) also yields the statement's
//! [`StatementFacts`]: a fingerprint of its normalised text (literals and parameters replaced by
//! `?`, whitespace and comments dropped; what N+1 detection counts by), that normalised text, and
//! the rulebook lints: `SELECT *` at the top level of the main query ([`Lint::SelectStar`]) and a
//! query that reads whole tables ([`Lint::UnboundedSelect`]: a top-level `SELECT … FROM table`
//! with no `WHERE`, `LIMIT`/`FETCH`, `GROUP BY`/`HAVING` or aggregate in its select list, or a
//! `TABLE t` statement). The tokenizer understands string literals, `E''` strings, dollar quotes,
//! quoted identifiers and comments, so a `'SELECT *'` literal or a commented-out clause never
//! counts; `count(*)`, `a * b` and `EXISTS (SELECT * …)` are not `SELECT *`.

mod analyse;
mod lexer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use analyse::derive;

/// The summary that replaces any new statement name once the label budget is spent.
pub const OTHER_SUMMARY: &str = "other";
/// How many distinct SQL strings the SQL → summary cache keeps before it is cleared.
pub const SQL_CACHE_ENTRIES: usize = 2048;
/// SQL strings longer than this are summarized on every call instead of being cached.
pub const SQL_CACHE_MAX_LEN: usize = 2048;
/// Longest summary kept (longer ones are cut at a character boundary).
const MAX_SUMMARY_LEN: usize = 128;

/// The bounded name of one statement: `db.operation.name` and `db.query.summary`.
///
/// Obtained from [`TimedStatement::summary`](crate::TimedStatement::summary) or [`summarize`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QuerySummary {
    operation: &'static str,
    summary: Arc<str>,
    facts: Option<Arc<StatementFacts>>,
}

/// What the tokenizer learnt about one SQL text, once (cached with its summary).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StatementFacts {
    fingerprint: u64,
    normalized: Box<str>,
    lints: u8,
}

/// A rule of the SQL rulebook a statement breaks (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Lint {
    /// Rule 6: never `SELECT *`; name the columns.
    SelectStar,
    /// Rule 3's companion: a query that reads whole tables (no `WHERE`, no `LIMIT`, no aggregate).
    UnboundedSelect,
}

impl Lint {
    /// Every lint, in bit order.
    pub const ALL: [Lint; 2] = [Lint::SelectStar, Lint::UnboundedSelect];

    /// The `rule` label value: `select_star`, `unbounded_select`.
    pub fn name(self) -> &'static str {
        match self {
            Lint::SelectStar => "select_star",
            Lint::UnboundedSelect => "unbounded_select",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Lint::SelectStar => 1,
            Lint::UnboundedSelect => 2,
        }
    }
}

impl StatementFacts {
    /// Hash of the normalised text: equal for the same statement with other literals.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The statement with literals and parameters as `?`, tokens separated by one space (at
    /// most 512 tokens).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The rulebook lints the statement breaks.
    pub fn lints(&self) -> impl Iterator<Item = Lint> + '_ {
        Lint::ALL.into_iter().filter(|l| self.lints & l.bit() != 0)
    }

    pub(crate) fn has_lints(&self) -> bool {
        self.lints != 0
    }
}

impl QuerySummary {
    pub(crate) fn new(operation: &'static str, summary: Arc<str>) -> Self {
        Self {
            operation,
            summary,
            facts: None,
        }
    }

    /// The same statement facts under another name (a `.named(..)` prepared statement).
    pub(crate) fn renamed(&self, summary: Arc<str>) -> Self {
        Self {
            operation: self.operation,
            summary,
            facts: self.facts.clone(),
        }
    }

    /// What is known of the SQL text behind this label (`None` for a raw statement or a
    /// transaction-control round trip).
    pub fn facts(&self) -> Option<&StatementFacts> {
        self.facts.as_deref()
    }

    /// The operation keyword (`SELECT`, `INSERT`, …, or `OTHER`), from a fixed list.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The statement name: the caller's `.named(..)` or the derived `OPERATION table` summary.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    pub(crate) fn summary_arc(&self) -> &Arc<str> {
        &self.summary
    }

    /// The label used for a raw [`tokio_postgres::Statement`], whose SQL text is not available.
    pub(crate) fn unknown() -> Self {
        Self::new("OTHER", Arc::from("unknown"))
    }
}

/// Derive the summary of one SQL text without caching or bounding it.
///
/// Handy to preview which label a statement will get. The recorder itself goes through a bounded
/// cache; see the [module docs](self).
///
/// ```
/// use pgvigil_timing::summarize;
/// let s = summarize("WITH recent AS (SELECT user_id FROM events WHERE at > $1) SELECT count(*) FROM recent r JOIN users u ON true");
/// assert_eq!(s.operation(), "SELECT");
/// assert_eq!(s.summary(), "SELECT recent");
/// assert_eq!(summarize("insert into public.Contacts (a) values ($1)").summary(), "INSERT public.contacts");
/// ```
pub fn summarize(sql: &str) -> QuerySummary {
    let d = derive(sql);
    QuerySummary {
        operation: d.operation,
        summary: Arc::from(d.summary),
        facts: Some(Arc::new(d.facts)),
    }
}

/// The bounded SQL → summary cache and label interner. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Summarizer {
    max_names: usize,
    by_sql: RwLock<HashMap<Box<str>, QuerySummary>>,
    names: RwLock<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
}

impl Summarizer {
    pub(crate) fn new(max_names: usize) -> Self {
        Self {
            max_names,
            by_sql: RwLock::new(HashMap::new()),
            names: RwLock::new(HashMap::new()),
            other: Arc::from(OTHER_SUMMARY),
        }
    }

    /// The bounded summary of `sql`.
    #[cfg(test)]
    pub(crate) fn for_sql(&self, sql: &str) -> QuerySummary {
        self.lookup(sql).0
    }

    /// The bounded summary of `sql`, and whether it was derived just now (a cache miss: the
    /// moment to look at its lints, off the hot path).
    pub(crate) fn lookup(&self, sql: &str) -> (QuerySummary, bool) {
        if sql.len() <= SQL_CACHE_MAX_LEN {
            if let Some(hit) = read(&self.by_sql).get(sql) {
                return (hit.clone(), false);
            }
        }
        let d = derive(sql);
        let label = QuerySummary {
            operation: d.operation,
            summary: self.intern(&d.summary),
            facts: Some(Arc::new(d.facts)),
        };
        if sql.len() <= SQL_CACHE_MAX_LEN {
            let mut map = write(&self.by_sql);
            if map.len() >= SQL_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(Box::from(sql), label.clone());
        }
        (label, true)
    }

    /// `sql`'s operation and facts under a caller-provided name, bounded like derived names.
    pub(crate) fn named(&self, name: &str, sql: Option<&str>) -> (QuerySummary, bool) {
        match sql {
            Some(sql) => {
                let (label, fresh) = self.lookup(sql);
                (label.renamed(self.intern(name)), fresh)
            }
            None => (QuerySummary::new("OTHER", self.intern(name)), false),
        }
    }

    /// Intern one label value; past the budget every new value is [`OTHER_SUMMARY`].
    pub(crate) fn intern(&self, name: &str) -> Arc<str> {
        let name = truncate(name, MAX_SUMMARY_LEN);
        if let Some(hit) = read(&self.names).get(name) {
            return hit.clone();
        }
        let mut names = write(&self.names);
        if let Some(hit) = names.get(name) {
            return hit.clone();
        }
        if names.len() >= self.max_names {
            return self.other.clone();
        }
        let value: Arc<str> = Arc::from(name);
        names.insert(Box::from(name), value.clone());
        value
    }

    /// Number of distinct names handed out so far (excluding [`OTHER_SUMMARY`]).
    pub(crate) fn distinct_names(&self) -> usize {
        read(&self.names).len()
    }
}

// A poisoned lock only means another thread panicked mid-insert into a plain map; the map is
// still valid, so keep serving rather than propagate the panic into the app's query path.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
