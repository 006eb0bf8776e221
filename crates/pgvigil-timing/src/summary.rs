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
}

impl QuerySummary {
    pub(crate) fn new(operation: &'static str, summary: Arc<str>) -> Self {
        Self { operation, summary }
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
    let (operation, summary) = derive(sql);
    QuerySummary::new(operation, Arc::from(summary))
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
    pub(crate) fn for_sql(&self, sql: &str) -> QuerySummary {
        if sql.len() <= SQL_CACHE_MAX_LEN {
            if let Some(hit) = read(&self.by_sql).get(sql) {
                return hit.clone();
            }
        }
        let (operation, summary) = derive(sql);
        let label = QuerySummary::new(operation, self.intern(&summary));
        if sql.len() <= SQL_CACHE_MAX_LEN {
            let mut map = write(&self.by_sql);
            if map.len() >= SQL_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(Box::from(sql), label.clone());
        }
        label
    }

    /// The operation of `sql` with a caller-provided name, bounded like derived names.
    pub(crate) fn named(&self, name: &str, sql: Option<&str>) -> QuerySummary {
        let operation = match sql {
            Some(sql) => self.for_sql(sql).operation,
            None => "OTHER",
        };
        QuerySummary::new(operation, self.intern(name))
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
    /// Any other punctuation, literal or parameter.
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
            b'\'' => {
                self.i += 1;
                self.skip_until(b'\'');
                Some(Tok::Other)
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
                Some(Tok::Other)
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
                    return Some(Tok::Other);
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
                // Numbers and operators: consume one char (whole UTF-8 sequence).
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

/// Derive `(operation, summary)` from SQL text. Stops lexing after a bounded number of tokens so
/// huge multi-row INSERTs cost no more than their head.
fn derive(sql: &str) -> (&'static str, String) {
    const MAX_TOKENS: usize = 512;
    let toks: Vec<Tok<'_>> = Lexer::new(sql).take(MAX_TOKENS).collect();
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
        let mut d = depth;
        let mut j = i + 1;
        let mut found = None;
        while let Some(t) = toks.get(j) {
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
                    found = Some(j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        match found {
            Some(j) => i = j,
            None => return ("OTHER", "OTHER".to_owned()),
        }
    }
    let Some(Tok::Word(first)) = toks.get(i) else {
        return ("OTHER", "OTHER".to_owned());
    };
    let Some(op) = OPERATIONS
        .iter()
        .copied()
        .find(|k| first.eq_ignore_ascii_case(k))
    else {
        return ("OTHER", "OTHER".to_owned());
    };
    let target = match op {
        "SELECT" => select_target(&toks, i, depth),
        "INSERT" | "MERGE" => {
            find_at_depth(&toks, i + 1, "INTO", depth).and_then(|at| relation(&toks, at + 1))
        }
        "DELETE" => {
            find_at_depth(&toks, i + 1, "FROM", depth).and_then(|at| relation(&toks, at + 1))
        }
        "UPDATE" | "COPY" | "TRUNCATE" | "TABLE" | "CALL" | "LOCK" => match toks.get(i + 1) {
            Some(Tok::Open) => None,
            _ => relation(&toks, i + 1),
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
    let summary = match target {
        Some(t) => format!("{op} {t}"),
        None => op.to_owned(),
    };
    (op, truncate(&summary, MAX_SUMMARY_LEN).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sql: &str) -> String {
        derive(sql).1
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
        assert_eq!(sum.named("load_campaign", None).summary(), OTHER_SUMMARY);
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
