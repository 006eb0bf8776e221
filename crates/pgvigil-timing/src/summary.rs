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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
/// let s = summarize("WITH recent AS (SELECT * FROM events) SELECT count(*) FROM recent r JOIN users u ON true");
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

/// Operation keywords recognised as the first word of a statement (the label is bounded by this
/// list; anything else is `OTHER`).
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "COPY",
    "VALUES",
    "TABLE",
    "CALL",
    "DO",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "SET",
    "RESET",
    "SHOW",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "VACUUM",
    "ANALYZE",
    "EXPLAIN",
    "LOCK",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "DISCARD",
    "REFRESH",
    "REINDEX",
    "CLUSTER",
    "COMMENT",
    "CHECKPOINT",
];

/// DDL object kinds that are appended to CREATE/ALTER/DROP (`CREATE TABLE`).
const DDL_KINDS: &[&str] = &[
    "TABLE",
    "INDEX",
    "VIEW",
    "SEQUENCE",
    "SCHEMA",
    "FUNCTION",
    "PROCEDURE",
    "TRIGGER",
    "TYPE",
    "EXTENSION",
    "DATABASE",
    "ROLE",
    "USER",
    "POLICY",
    "DOMAIN",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    /// Unquoted word (keyword or identifier), as written.
    Word(&'a str),
    /// Double-quoted identifier, without the quotes.
    Quoted(&'a str),
    Open,
    Close,
    Dot,
    Semi,
    Comma,
    Star,
    /// A string or numeric literal, or a parameter (`$1`): `?` in the normalised text.
    Literal,
    /// Any other punctuation (an operator character).
    Other,
}

impl Tok<'_> {
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// A tiny SQL lexer: skips whitespace, comments (`--`, nested `/* */`), string literals
/// (`'…'`, `E'…'`, `$tag$…$tag$`) and numbers; yields words, quoted identifiers and brackets.
struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    fn skip_trivia(&mut self) {
        loop {
            let b = self.b;
            while self.i < b.len() && b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            if b[self.i..].starts_with(b"--") {
                while self.i < b.len() && b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if b[self.i..].starts_with(b"/*") {
                let mut depth = 0usize;
                while self.i < b.len() {
                    if b[self.i..].starts_with(b"/*") {
                        depth += 1;
                        self.i += 2;
                    } else if b[self.i..].starts_with(b"*/") {
                        depth -= 1;
                        self.i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.i += 1;
                    }
                }
            } else {
                return;
            }
        }
    }

    /// Skip past the closing `delim` (doubled delimiters are escapes). Returns the index of the
    /// closing delimiter, or the end of input if there is none.
    fn skip_until(&mut self, delim: u8) -> usize {
        while self.i < self.b.len() {
            if self.b[self.i] == delim {
                if self.b.get(self.i + 1) == Some(&delim) {
                    self.i += 2;
                    continue;
                }
                self.i += 1;
                return self.i - 1;
            }
            self.i += 1;
        }
        self.b.len()
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_trivia();
        let b = self.b;
        let c = *b.get(self.i)?;
        let start = self.i;
        match c {
            b'(' => {
                self.i += 1;
                Some(Tok::Open)
            }
            b')' => {
                self.i += 1;
                Some(Tok::Close)
            }
            b'.' if !b.get(self.i + 1).is_some_and(u8::is_ascii_digit) => {
                self.i += 1;
                Some(Tok::Dot)
            }
            b';' => {
                self.i += 1;
                Some(Tok::Semi)
            }
            b',' => {
                self.i += 1;
                Some(Tok::Comma)
            }
            b'*' => {
                self.i += 1;
                Some(Tok::Star)
            }
            b'\'' => {
                self.i += 1;
                self.skip_until(b'\'');
                Some(Tok::Literal)
            }
            c if c.is_ascii_digit() || c == b'.' => {
                // A number (the Dot case above took `.` not followed by a digit).
                self.i += 1;
                while self.i < b.len()
                    && (b[self.i].is_ascii_alphanumeric() || b[self.i] == b'.' || b[self.i] == b'_')
                {
                    self.i += 1;
                }
                Some(Tok::Literal)
            }
            b'"' => {
                self.i += 1;
                let inner = self.i;
                let end = self.skip_until(b'"');
                Some(Tok::Quoted(&self.s[inner..end]))
            }
            b'$' => {
                // $1 parameter, or a dollar-quoted string $tag$ ... $tag$.
                let mut j = self.i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j < b.len() && b[j] == b'$' && !b[self.i + 1..j].iter().all(u8::is_ascii_digit)
                    || j < b.len() && b[j] == b'$' && j == self.i + 1
                {
                    let tag = &b[self.i..=j];
                    self.i = j + 1;
                    while self.i < b.len() && !b[self.i..].starts_with(tag) {
                        self.i += 1;
                    }
                    self.i = (self.i + tag.len()).min(b.len());
                } else {
                    self.i = j;
                }
                Some(Tok::Literal)
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // E'…' escape string.
                if (c == b'e' || c == b'E') && b.get(self.i + 1) == Some(&b'\'') {
                    self.i += 2;
                    while self.i < b.len() {
                        match b[self.i] {
                            b'\\' => self.i += 2,
                            b'\'' if b.get(self.i + 1) == Some(&b'\'') => self.i += 2,
                            b'\'' => {
                                self.i += 1;
                                break;
                            }
                            _ => self.i += 1,
                        }
                    }
                    self.i = self.i.min(b.len());
                    return Some(Tok::Literal);
                }
                while self.i < b.len()
                    && (b[self.i].is_ascii_alphanumeric()
                        || b[self.i] == b'_'
                        || b[self.i] == b'$'
                        || b[self.i] >= 0x80)
                {
                    self.i += 1;
                }
                Some(Tok::Word(&self.s[start..self.i]))
            }
            _ => {
                // Operators: consume one char (whole UTF-8 sequence).
                self.i += 1;
                while self.i < b.len() && !self.s.is_char_boundary(self.i) {
                    self.i += 1;
                }
                Some(Tok::Other)
            }
        }
    }
}

/// A (possibly schema-qualified) relation name starting at `toks[i]`.
fn relation(toks: &[Tok<'_>], mut i: usize) -> Option<String> {
    // Skip ONLY / LATERAL / IF EXISTS-style noise words before the name.
    while let Some(t) = toks.get(i) {
        if ["ONLY", "LATERAL", "TABLE", "IF", "EXISTS", "NOT"]
            .iter()
            .any(|k| t.is_kw(k))
        {
            i += 1;
        } else {
            break;
        }
    }
    let mut out = String::new();
    loop {
        match toks.get(i)? {
            Tok::Word(w) => out.push_str(&w.to_lowercase()),
            Tok::Quoted(q) => out.push_str(q),
            _ => return if out.is_empty() { None } else { Some(out) },
        }
        if toks.get(i + 1) == Some(&Tok::Dot) {
            out.push('.');
            i += 2;
        } else {
            return Some(out);
        }
    }
}

/// Index of the first `kw` at bracket depth `depth` starting the scan at `from`.
fn find_at_depth(toks: &[Tok<'_>], from: usize, kw: &str, depth: i32) -> Option<usize> {
    let mut d = depth;
    for (i, t) in toks.iter().enumerate().skip(from) {
        match t {
            Tok::Open => d += 1,
            Tok::Close => {
                d -= 1;
                if d < depth {
                    return None;
                }
            }
            Tok::Semi if d == depth => return None,
            t if d == depth && t.is_kw(kw) => return Some(i),
            _ => {}
        }
    }
    None
}

/// The target of a SELECT whose keyword is at `toks[at]` and depth `depth`.
fn select_target(toks: &[Tok<'_>], at: usize, depth: i32) -> Option<String> {
    let from = find_at_depth(toks, at + 1, "FROM", depth)?;
    match toks.get(from + 1)? {
        Tok::Open => {
            // FROM (subquery): the first SELECT inside names the table.
            let sel = find_at_depth(toks, from + 2, "SELECT", depth + 1)?;
            select_target(toks, sel, depth + 1)
        }
        _ => relation(toks, from + 1),
    }
}

/// What [`derive`] learns from one SQL text.
struct Derived {
    operation: &'static str,
    summary: String,
    facts: StatementFacts,
}

/// Lex `sql` (at most `MAX_TOKENS` tokens, so huge multi-row INSERTs cost no more than their
/// head), keeping the normalised text: words as written, literals and parameters as `?`.
fn lex(sql: &str) -> (Vec<Tok<'_>>, String) {
    const MAX_TOKENS: usize = 512;
    let mut lexer = Lexer::new(sql);
    let mut toks = Vec::new();
    let mut normalized = String::with_capacity(sql.len().min(1024));
    while toks.len() < MAX_TOKENS {
        lexer.skip_trivia();
        let start = lexer.i;
        let Some(tok) = lexer.next() else { break };
        if !normalized.is_empty() {
            normalized.push(' ');
        }
        match tok {
            Tok::Literal => normalized.push('?'),
            _ => normalized.push_str(&sql[start..lexer.i.min(sql.len())]),
        }
        toks.push(tok);
    }
    (toks, normalized)
}

fn fingerprint(normalized: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    normalized.hash(&mut h);
    h.finish()
}

/// Derive the operation, summary and facts of one SQL text.
fn derive(sql: &str) -> Derived {
    let (toks, normalized) = lex(sql);
    let (operation, target, lints) = analyse(&toks);
    let summary = match target {
        Some(t) => format!("{operation} {t}"),
        None => operation.to_owned(),
    };
    Derived {
        operation,
        summary: truncate(&summary, MAX_SUMMARY_LEN).to_owned(),
        facts: StatementFacts {
            fingerprint: fingerprint(&normalized),
            normalized: normalized.into_boxed_str(),
            lints,
        },
    }
}

/// `(operation, main table, lint bits)` of a token stream.
fn analyse(toks: &[Tok<'_>]) -> (&'static str, Option<String>, u8) {
    const NONE: (&str, Option<String>, u8) = ("OTHER", None, 0);
    // Leading brackets: "(SELECT ...)".
    let mut i = 0;
    let mut depth = 0;
    while toks.get(i) == Some(&Tok::Open) {
        i += 1;
        depth += 1;
    }
    // WITH [RECURSIVE] name AS (...), ...: the main statement is the first operation keyword at
    // the top level after the CTE list.
    if toks.get(i).is_some_and(|t| t.is_kw("WITH")) {
        match main_after_ctes(toks, i, depth) {
            Some(j) => i = j,
            None => return NONE,
        }
    }
    let Some(Tok::Word(first)) = toks.get(i) else {
        return NONE;
    };
    let Some(op) = OPERATIONS
        .iter()
        .copied()
        .find(|k| first.eq_ignore_ascii_case(k))
    else {
        return NONE;
    };
    let target = match op {
        "SELECT" => select_target(toks, i, depth),
        "INSERT" | "MERGE" => {
            find_at_depth(toks, i + 1, "INTO", depth).and_then(|at| relation(toks, at + 1))
        }
        "DELETE" => find_at_depth(toks, i + 1, "FROM", depth).and_then(|at| relation(toks, at + 1)),
        "UPDATE" | "COPY" | "TRUNCATE" | "TABLE" | "CALL" | "LOCK" => match toks.get(i + 1) {
            Some(Tok::Open) => None,
            _ => relation(toks, i + 1),
        },
        "CREATE" | "ALTER" | "DROP" => {
            // CREATE [OR REPLACE] [UNIQUE|TEMP|UNLOGGED|MATERIALIZED ...] <kind>
            toks[i + 1..]
                .iter()
                .take(6)
                .find_map(|t| DDL_KINDS.iter().find(|k| t.is_kw(k)))
                .map(|k| (*k).to_owned())
        }
        _ => None,
    };
    let lints = match op {
        "SELECT" => select_lints(toks, i, depth),
        // TABLE t is SELECT * FROM t.
        "TABLE" if target.is_some() => Lint::SelectStar.bit() | Lint::UnboundedSelect.bit(),
        _ => 0,
    };
    (op, target, lints)
}

/// Index of the main statement's keyword after `WITH … AS (…), …` starting at `toks[at]`.
fn main_after_ctes(toks: &[Tok<'_>], at: usize, depth: i32) -> Option<usize> {
    let mut d = depth;
    for (j, t) in toks.iter().enumerate().skip(at + 1) {
        match t {
            Tok::Open => d += 1,
            Tok::Close => d -= 1,
            t if d == depth
                && [
                    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE",
                ]
                .iter()
                .any(|k| t.is_kw(k)) =>
            {
                return Some(j);
            }
            _ => {}
        }
    }
    None
}

/// Aggregates that make a select list return one row per group.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "variance",
];

/// The lints of the SELECT whose keyword is `toks[at]`, at bracket depth `depth`.
fn select_lints(toks: &[Tok<'_>], at: usize, depth: i32) -> u8 {
    let mut lints = 0;
    let from = find_at_depth(toks, at + 1, "FROM", depth);
    // The select list, at the query's own depth: `*` or `t.*` as an item.
    let list_end = from.unwrap_or(toks.len());
    let mut d = depth;
    let mut aggregate = false;
    for k in at + 1..list_end {
        match &toks[k] {
            Tok::Open => d += 1,
            Tok::Close => d -= 1,
            Tok::Semi if d == depth => break,
            Tok::Star if d == depth => {
                let item_start = matches!(toks[k - 1], Tok::Comma | Tok::Dot)
                    || ["SELECT", "DISTINCT", "ALL"]
                        .iter()
                        .any(|kw| toks[k - 1].is_kw(kw));
                if item_start {
                    lints |= Lint::SelectStar.bit();
                }
            }
            Tok::Word(w)
                if d == depth
                    && toks.get(k + 1) == Some(&Tok::Open)
                    && AGGREGATES.iter().any(|a| w.eq_ignore_ascii_case(a)) =>
            {
                aggregate = true;
            }
            _ => {}
        }
    }
    // Reads whole tables: FROM a table (not a function or VALUES), and nothing at the top level
    // that bounds the rows.
    let Some(from) = from else { return lints };
    let reads_table = match (toks.get(from + 1), toks.get(from + 2)) {
        (Some(Tok::Word(_) | Tok::Quoted(_)), Some(Tok::Open)) => false, // a set-returning function
        (Some(Tok::Word(w)), _) if w.eq_ignore_ascii_case("LATERAL") => false,
        (Some(Tok::Word(_) | Tok::Quoted(_)), _) => true,
        (Some(Tok::Open), _) => {
            find_at_depth(toks, from + 2, "SELECT", depth + 1).is_some_and(|sel| {
                select_lints(toks, sel, depth + 1) & Lint::UnboundedSelect.bit() != 0
            })
        }
        _ => false,
    };
    let bounded = ["WHERE", "LIMIT", "FETCH", "GROUP", "HAVING"]
        .iter()
        .any(|kw| find_at_depth(toks, from + 1, kw, depth).is_some());
    if reads_table && !bounded && !aggregate {
        lints |= Lint::UnboundedSelect.bit();
    }
    lints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sql: &str) -> String {
        derive(sql).summary
    }

    fn lints(sql: &str) -> Vec<&'static str> {
        derive(sql).facts.lints().map(Lint::name).collect()
    }

    #[test]
    fn derives_operation_and_main_table() {
        assert_eq!(s("SELECT $1::int4"), "SELECT");
        assert_eq!(s("select id from users where id = $1"), "SELECT users");
        assert_eq!(
            s("SELECT * FROM ONLY public.Users u"),
            "SELECT public.users"
        );
        assert_eq!(s(r#"SELECT * FROM "Campaign""#), "SELECT Campaign");
        assert_eq!(
            s("insert into contacts(a,b) values ($1,$2)"),
            "INSERT contacts"
        );
        assert_eq!(s("UPDATE accounts SET x = 1"), "UPDATE accounts");
        assert_eq!(s("DELETE FROM sessions WHERE t < now()"), "DELETE sessions");
        assert_eq!(s("COPY contacts (a) FROM STDIN"), "COPY contacts");
        assert_eq!(s("COPY (SELECT 1) TO STDOUT"), "COPY");
        assert_eq!(s("TRUNCATE TABLE t1"), "TRUNCATE t1");
        assert_eq!(s("BEGIN"), "BEGIN");
        assert_eq!(s("CREATE UNIQUE INDEX i ON t(a)"), "CREATE INDEX");
        assert_eq!(s("create table if not exists x (a int)"), "CREATE TABLE");
        assert_eq!(
            s("MERGE INTO tgt USING src ON true WHEN MATCHED THEN DO NOTHING"),
            "MERGE tgt"
        );
        assert_eq!(s("frobnicate the database"), "OTHER");
        assert_eq!(s(""), "OTHER");
    }

    #[test]
    fn skips_comments_ctes_literals_and_subqueries() {
        assert_eq!(
            s("/* app=web /* nested */ */ -- hi\n SELECT 'FROM x' AS a, $$ FROM y $$ FROM z"),
            "SELECT z"
        );
        assert_eq!(
            s(
                "WITH a AS (SELECT * FROM x), b(c) AS MATERIALIZED (DELETE FROM y RETURNING *) \
               INSERT INTO archive SELECT * FROM b"
            ),
            "INSERT archive"
        );
        assert_eq!(s("SELECT extract(epoch FROM now())"), "SELECT");
        assert_eq!(
            s("SELECT * FROM (SELECT * FROM inner_t) sub"),
            "SELECT inner_t"
        );
        assert_eq!(
            s("(SELECT 1 FROM t1) UNION (SELECT 2 FROM t2)"),
            "SELECT t1"
        );
        assert_eq!(s("SELECT E'it\\'s FROM' FROM t"), "SELECT t");
        assert_eq!(s("SELECT 1.5 FROM s.t"), "SELECT s.t");
    }

    #[test]
    fn rulebook_lints_respect_literals_comments_and_depth() {
        assert_eq!(
            lints("SELECT * FROM campaign WHERE id = $1"),
            ["select_star"]
        );
        assert_eq!(
            lints("SELECT c.*, 1 FROM campaign c WHERE id = $1"),
            ["select_star"]
        );
        assert_eq!(lints("SELECT DISTINCT * FROM t LIMIT 5"), ["select_star"]);
        assert_eq!(
            lints("SELECT * FROM campaign"),
            ["select_star", "unbounded_select"]
        );
        assert_eq!(lints("TABLE campaign"), ["select_star", "unbounded_select"]);
        assert_eq!(lints("SELECT id, name FROM campaign"), ["unbounded_select"]);
        assert_eq!(
            lints("SELECT id FROM a JOIN b ON a.x = b.x ORDER BY id"),
            ["unbounded_select"]
        );
        assert_eq!(
            lints("WITH r AS (SELECT id FROM t WHERE x) SELECT * FROM r"),
            ["select_star", "unbounded_select"]
        );
        for bounded in [
            "SELECT id, name FROM campaign WHERE id = $1",
            "SELECT id FROM campaign ORDER BY id LIMIT 50",
            "SELECT id FROM campaign FETCH FIRST 10 ROWS ONLY",
            "SELECT count(*) FROM campaign",
            "SELECT status, count(*) FROM campaign GROUP BY status",
            "SELECT a * b FROM t WHERE id = 1",
            "SELECT id FROM t WHERE EXISTS (SELECT * FROM u WHERE u.t = t.id)",
            "SELECT 'SELECT * FROM t' AS q",
            "SELECT $$ SELECT * FROM t $$",
            "/* SELECT * FROM t */ SELECT 1",
            "SELECT id FROM generate_series(1, 10) id",
            "SELECT 1",
            "SELECT x FROM (SELECT x FROM t WHERE y) s",
            "INSERT INTO t SELECT * FROM u WHERE false",
            "UPDATE t SET a = 1",
        ] {
            assert_eq!(lints(bounded), Vec::<&str>::new(), "{bounded}");
        }
    }

    #[test]
    fn normalised_text_and_fingerprints() {
        let a = derive("SELECT name FROM contacts WHERE id = 42 AND email = 'a@x' -- c");
        let b = derive("SELECT  name FROM contacts\nWHERE id = $1 AND email = E'b\\'x'");
        assert_eq!(
            &*a.facts.normalized,
            "SELECT name FROM contacts WHERE id = ? AND email = ?"
        );
        assert_eq!(a.facts.normalized, b.facts.normalized);
        assert_eq!(a.facts.fingerprint, b.facts.fingerprint);
        let c = derive("SELECT name FROM contacts WHERE id = ANY($1)");
        assert_ne!(a.facts.fingerprint, c.facts.fingerprint);
        assert_eq!(
            derive("SELECT 1.5, .5 FROM t").facts.normalized.as_ref(),
            "SELECT ? , ? FROM t"
        );
    }

    #[test]
    fn cardinality_is_bounded_and_cache_memory_too() {
        let sum = Summarizer::new(10);
        for i in 0..5000 {
            let l = sum.for_sql(&format!("SELECT * FROM table_{i} WHERE id = {i}"));
            assert_eq!(l.operation(), "SELECT");
        }
        assert_eq!(sum.distinct_names(), 10);
        assert!(read(&sum.by_sql).len() <= SQL_CACHE_ENTRIES);
        assert_eq!(
            sum.for_sql("SELECT * FROM table_4999").summary(),
            OTHER_SUMMARY
        );
        assert_eq!(
            sum.for_sql("SELECT * FROM table_3").summary(),
            "SELECT table_3"
        );
        // Caller names share the same budget.
        assert_eq!(sum.named("load_campaign", None).0.summary(), OTHER_SUMMARY);
        let long = "x".repeat(1000);
        assert!(Summarizer::new(5).intern(&long).len() <= MAX_SUMMARY_LEN);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for sql in [
            "'",
            "\"",
            "$",
            "$$",
            "$a$",
            "/*",
            "--",
            "E'",
            "E'\\",
            "(((",
            ")))",
            "é FROM ü",
            "SELECT FROM",
            "WITH",
            "WITH a AS (",
            "INSERT",
            "select * from \"",
        ] {
            let _ = derive(sql);
        }
    }
}
