//! The verdicts, pure: which indexes the top statements miss, and which statements break the
//! rulebook, from what [`super::extract`] found in their texts and what the catalog says of
//! their tables.
//!
//! A table gets a suggestion from a statement when, together:
//! 1. the statement filters it (`=`, `IN`/`ANY`, a range, `LIKE` prefix) or, failing that,
//!    joins it, or, failing that and with a `LIMIT`, sorts it, by columns that exist in it;
//! 2. no valid index of the table starts with any of those filter or join columns (an index
//!    "serves" a column if it leads with it);
//! 3. the table is not tiny (`min_table_rows`) and was sequentially scanned at least
//!    `min_seq_scans` times in the window.
//!
//! The suggested index lists the equality and `IN` columns (at most three, in the order the
//! statement names them) then one range or `LIKE` column; for a join, the joined column; for a
//! sort, the sort columns. Statements suggesting the same index are merged: the one with the
//! most total time names it, the others are counted.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::extract::{Analysis, TableName, Usage, quote_ident};
use crate::config::AdviceConfig;

/// A top statement with its analysis.
#[derive(Debug, Clone)]
pub struct TopStatement {
    /// pg_stat_statements.queryid.
    pub queryid: i64,
    /// Calls, rows returned and total execution time (ms), summed over its users.
    pub calls: f64,
    /// See `calls`.
    pub rows: f64,
    /// See `calls`.
    pub total_ms: f64,
    /// What its text says.
    pub analysis: Analysis,
}

/// What the catalog says of one table a top statement names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableFacts {
    /// `schema.table`, quoted as `format('%I.%I')` does.
    pub name: String,
    /// Estimated rows: the larger of `reltuples` and `n_live_tup`.
    pub rows: f64,
    /// Sequential scans and the rows they read, in the window.
    pub seq_scans: i64,
    /// See `seq_scans`.
    pub seq_rows: i64,
    /// Its columns.
    pub columns: HashSet<String>,
    /// The first key column of each of its valid indexes.
    pub leading: HashSet<String>,
}

/// The period the scan counts cover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Window {
    /// Since the previous run, this many seconds ago.
    Seconds(f64),
    /// Since the statistics were last reset (the first run; `pgvigil advise`).
    SinceReset,
}

impl Window {
    fn describe(self) -> String {
        match self {
            Window::Seconds(s) => format!("in the last {}", crate::alert::rules::human_seconds(s)),
            Window::SinceReset => "since the statistics were last reset".to_owned(),
        }
    }
}

/// One suggested index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The table, `schema.table`.
    pub table: String,
    /// The columns of the index, in order (folded, unquoted).
    pub columns: Vec<String>,
    /// How the statement uses the first column: `filters`, `joins` or `sorts`.
    pub verb: &'static str,
    /// The statement with the most total time among those that would use it.
    pub queryid: i64,
    /// The other top statements that would use it.
    pub other_statements: usize,
    /// That statement's total execution time, ms.
    pub total_ms: f64,
    /// Sequential scans of the table in the window, and the rows they read.
    pub seq_scans: i64,
    /// See `seq_scans`.
    pub seq_rows: i64,
    /// The table's estimated rows.
    pub table_rows: f64,
    /// The window of `seq_scans`.
    pub window: Window,
}

impl Suggestion {
    /// The `columns` label: `email` or `owner_id,created_at`.
    pub fn columns_label(&self) -> String {
        self.columns.join(",")
    }

    /// The statement that creates the index without blocking writes.
    pub fn sql(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
        format!(
            "CREATE INDEX CONCURRENTLY ON {} ({});",
            self.table,
            columns.join(", ")
        )
    }

    /// The advice in one sentence, with its figures.
    pub fn message(&self) -> String {
        let others = match self.other_statements {
            0 => String::new(),
            n => format!(
                " (and {n} other top statement{})",
                if n == 1 { "" } else { "s" }
            ),
        };
        format!(
            "statement {}{others} {} {} by {}; no index starts with {}; {} seq scans reading {} rows {} ({} rows in the table) → {}",
            self.queryid,
            self.verb,
            self.table,
            self.columns.join(", "),
            self.columns[0],
            thousands(self.seq_scans),
            si(self.seq_rows as f64),
            self.window.describe(),
            si(self.table_rows),
            self.sql()
        )
    }
}

/// One rulebook lint of a top statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lint {
    /// pg_stat_statements.queryid.
    pub queryid: i64,
    /// `select_star` or `unbounded_select`.
    pub lint: &'static str,
    /// What is wrong and what to do, in one sentence.
    pub message: String,
}

/// Every suggestion (strongest first: most rows read by sequential scans) and lint of the top
/// statements. `oids` maps each name the statements use to its table (names that resolve to
/// nothing, or to no table, are absent); `tables` has the facts of those tables.
pub fn evaluate(
    statements: &[TopStatement],
    oids: &HashMap<TableName, u32>,
    tables: &HashMap<u32, TableFacts>,
    config: &AdviceConfig,
    window: Window,
) -> (Vec<Suggestion>, Vec<Lint>) {
    let mut found: BTreeMap<(u32, Vec<String>), Suggestion> = BTreeMap::new();
    let mut lints = Vec::new();
    for statement in statements {
        for (oid, columns) in attributed(statement, oids, tables) {
            let facts = &tables[&oid];
            if facts.rows < config.min_table_rows as f64 || facts.seq_scans < config.min_seq_scans {
                continue;
            }
            let Some((verb, index)) = missing(&columns, &facts.leading, statement) else {
                continue;
            };
            let entry = found.entry((oid, index.clone()));
            let suggestion = Suggestion {
                table: facts.name.clone(),
                columns: index,
                verb,
                queryid: statement.queryid,
                other_statements: 0,
                total_ms: statement.total_ms,
                seq_scans: facts.seq_scans,
                seq_rows: facts.seq_rows,
                table_rows: facts.rows,
                window,
            };
            use std::collections::btree_map::Entry;
            match entry {
                Entry::Vacant(v) => {
                    v.insert(suggestion);
                }
                Entry::Occupied(mut o) => {
                    let others = o.get().other_statements + 1;
                    if suggestion.total_ms > o.get().total_ms {
                        o.insert(suggestion);
                    }
                    o.get_mut().other_statements = others;
                }
            }
        }
        lints.extend(lint(statement, oids, tables, config));
    }
    let mut suggestions: Vec<Suggestion> = found.into_values().collect();
    suggestions.sort_by(|a, b| {
        b.seq_rows
            .cmp(&a.seq_rows)
            .then(b.total_ms.total_cmp(&a.total_ms))
            .then(a.table.cmp(&b.table))
    });
    (suggestions, lints)
}

/// The statement's column uses attributed to one table each: a use whose candidates hold the
/// column in exactly one table. Each column once, with its strongest usage.
fn attributed(
    statement: &TopStatement,
    oids: &HashMap<TableName, u32>,
    tables: &HashMap<u32, TableFacts>,
) -> BTreeMap<u32, Vec<(String, Usage)>> {
    let mut by_table: BTreeMap<u32, Vec<(String, Usage)>> = BTreeMap::new();
    for used in &statement.analysis.columns {
        let owners: Vec<u32> = used
            .tables
            .iter()
            .filter_map(|t| oids.get(t))
            .copied()
            .filter(|oid| {
                tables
                    .get(oid)
                    .is_some_and(|f| f.columns.contains(&used.column))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let [oid] = owners[..] else {
            continue;
        };
        let columns = by_table.entry(oid).or_default();
        match columns.iter_mut().find(|(c, _)| *c == used.column) {
            Some((_, usage)) => *usage = (*usage).min(used.usage),
            None => columns.push((used.column.clone(), used.usage)),
        }
    }
    by_table
}

/// The index a table misses for the statement, with the verb of the advice; `None` if an
/// index already serves it or there is nothing to index.
fn missing(
    columns: &[(String, Usage)],
    leading: &HashSet<String>,
    statement: &TopStatement,
) -> Option<(&'static str, Vec<String>)> {
    let served = columns
        .iter()
        .any(|(c, u)| (u.is_filter() || *u == Usage::Join) && leading.contains(c));
    if served {
        return None;
    }
    let with = |pred: fn(Usage) -> bool| -> Vec<String> {
        columns
            .iter()
            .filter(|(_, u)| pred(*u))
            .map(|(c, _)| c.clone())
            .collect()
    };
    let mut index = with(|u| matches!(u, Usage::Equality | Usage::In));
    index.truncate(3);
    if let Some(range) = with(|u| matches!(u, Usage::Range | Usage::LikePrefix))
        .into_iter()
        .next()
    {
        index.push(range);
    }
    if !index.is_empty() {
        return Some(("filters", index));
    }
    if let Some(join) = with(|u| u == Usage::Join).into_iter().next() {
        return Some(("joins", vec![join]));
    }
    let mut sorts = with(|u| u == Usage::OrderBy);
    sorts.truncate(3);
    let bounded = !statement.analysis.unbounded;
    match sorts.first() {
        Some(first) if bounded && !leading.contains(first) => Some(("sorts", sorts)),
        _ => None,
    }
}

fn lint(
    statement: &TopStatement,
    oids: &HashMap<TableName, u32>,
    tables: &HashMap<u32, TableFacts>,
    config: &AdviceConfig,
) -> Vec<Lint> {
    let mut lints = Vec::new();
    let analysis = &statement.analysis;
    if analysis.select_star {
        lints.push(Lint {
            queryid: statement.queryid,
            lint: "select_star",
            message: format!(
                "statement {} selects * (rule 6): list the columns the caller reads, so a new column does not widen every row sent and an index-only scan stays possible",
                statement.queryid
            ),
        });
    }
    let per_call = if statement.calls > 0.0 {
        statement.rows / statement.calls
    } else {
        0.0
    };
    let large = analysis
        .tables
        .iter()
        .filter_map(|t| tables.get(oids.get(t)?))
        .filter(|f| f.rows >= config.large_table_rows as f64)
        .max_by(|a, b| a.rows.total_cmp(&b.rows));
    if let Some(large) =
        large.filter(|_| analysis.unbounded && per_call >= config.unbounded_min_rows)
    {
        lints.push(Lint {
            queryid: statement.queryid,
            lint: "unbounded_select",
            message: format!(
                "statement {} reads {} ({} rows) with no LIMIT and returns {} rows a call on average: page it (keyset pagination with LIMIT) or aggregate in SQL",
                statement.queryid,
                large.name,
                si(large.rows),
                si(per_call)
            ),
        });
    }
    lints
}

/// `35000` → `35,000`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `1.7e9` → `1.7 G`; below ten thousand, the whole number.
pub fn si(n: f64) -> String {
    match n.abs() {
        a if a >= 1e9 => format!("{:.1} G", n / 1e9),
        a if a >= 1e6 => format!("{:.1} M", n / 1e6),
        a if a >= 1e4 => format!("{:.1} k", n / 1e3),
        _ => format!("{}", n.round() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::super::extract::analyse;
    use super::*;

    fn facts(name: &str, columns: &[&str], leading: &[&str]) -> TableFacts {
        TableFacts {
            name: name.into(),
            rows: 1e6,
            seq_scans: 35_000,
            seq_rows: 1_700_000_000,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            leading: leading.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn statement(queryid: i64, sql: &str) -> TopStatement {
        TopStatement {
            queryid,
            calls: 100.0,
            rows: 100.0,
            total_ms: 1000.0 * queryid as f64,
            analysis: analyse(sql).unwrap(),
        }
    }

    fn world(leading: &[&str]) -> (HashMap<TableName, u32>, HashMap<u32, TableFacts>) {
        let oids = HashMap::from([
            (
                TableName {
                    schema: None,
                    name: "contacts".into(),
                },
                1,
            ),
            (
                TableName {
                    schema: None,
                    name: "orders".into(),
                },
                2,
            ),
        ]);
        let tables = HashMap::from([
            (
                1,
                facts(
                    "public.contacts",
                    &["id", "email", "name", "created_at"],
                    leading,
                ),
            ),
            (
                2,
                facts("public.orders", &["id", "contact_id", "total"], &["id"]),
            ),
        ]);
        (oids, tables)
    }

    #[test]
    fn names_the_unindexed_filter_and_nothing_once_indexed() {
        let s = [statement(
            7,
            "SELECT id, name FROM contacts WHERE email = $1",
        )];
        let config = AdviceConfig::default();
        let (oids, tables) = world(&["id"]);
        let (suggestions, lints) = evaluate(&s, &oids, &tables, &config, Window::SinceReset);
        assert_eq!(suggestions.len(), 1);
        let m = suggestions[0].message();
        assert_eq!(
            m,
            "statement 7 filters public.contacts by email; no index starts with email; 35,000 seq scans reading 1.7 G rows since the statistics were last reset (1.0 M rows in the table) → CREATE INDEX CONCURRENTLY ON public.contacts (email);"
        );
        assert!(lints.is_empty());
        let (oids, tables) = world(&["id", "email"]);
        assert!(
            evaluate(&s, &oids, &tables, &config, Window::SinceReset)
                .0
                .is_empty()
        );
    }

    #[test]
    fn small_or_rarely_scanned_tables_get_nothing() {
        let s = [statement(7, "SELECT id FROM contacts WHERE email = $1")];
        let (oids, mut tables) = world(&["id"]);
        let config = AdviceConfig::default();
        tables.get_mut(&1).unwrap().rows = 500.0;
        assert!(
            evaluate(&s, &oids, &tables, &config, Window::SinceReset)
                .0
                .is_empty()
        );
        tables.get_mut(&1).unwrap().rows = 1e6;
        tables.get_mut(&1).unwrap().seq_scans = 3;
        assert!(
            evaluate(&s, &oids, &tables, &config, Window::Seconds(300.0))
                .0
                .is_empty()
        );
    }

    #[test]
    fn equality_columns_lead_then_one_range_and_statements_merge() {
        let s = [
            statement(
                1,
                "SELECT id FROM contacts WHERE created_at > $1 AND name = $2 AND email = $3",
            ),
            statement(
                2,
                "SELECT id FROM contacts WHERE email = $1 AND name = $2 AND created_at > $3",
            ),
        ];
        let (oids, tables) = world(&["id"]);
        let (suggestions, _) = evaluate(
            &s,
            &oids,
            &tables,
            &AdviceConfig::default(),
            Window::SinceReset,
        );
        // Different column orders are different indexes; the range column goes last.
        assert_eq!(suggestions.len(), 2);
        assert_eq!(suggestions[0].columns, ["email", "name", "created_at"]);
        assert!(
            suggestions
                .iter()
                .all(|s| s.columns.last().map(String::as_str) == Some("created_at"))
        );
        let same = [
            statement(1, "SELECT id FROM contacts WHERE email = $1"),
            statement(3, "SELECT name FROM contacts WHERE email = $1 LIMIT $2"),
        ];
        let (suggestions, _) = evaluate(
            &same,
            &oids,
            &tables,
            &AdviceConfig::default(),
            Window::SinceReset,
        );
        assert_eq!(suggestions.len(), 1);
        assert_eq!(suggestions[0].queryid, 3);
        assert_eq!(suggestions[0].other_statements, 1);
    }

    #[test]
    fn joins_and_unknown_columns() {
        let s = [statement(
            4,
            "SELECT o.total FROM contacts c JOIN orders o ON o.contact_id = c.id WHERE c.nickname = $1",
        )];
        let (oids, tables) = world(&["id"]);
        let (suggestions, _) = evaluate(
            &s,
            &oids,
            &tables,
            &AdviceConfig::default(),
            Window::SinceReset,
        );
        // contacts is served by its id index for the join; `nickname` is no column of it.
        assert_eq!(suggestions.len(), 1);
        assert_eq!(suggestions[0].table, "public.orders");
        assert_eq!(suggestions[0].columns, ["contact_id"]);
        assert_eq!(suggestions[0].verb, "joins");
    }

    #[test]
    fn lints_select_star_and_unbounded_selects_on_large_tables() {
        let mut s = statement(9, "SELECT * FROM contacts");
        s.rows = 1e7;
        let (oids, tables) = world(&["id"]);
        let (_, lints) = evaluate(
            &[s.clone()],
            &oids,
            &tables,
            &AdviceConfig::default(),
            Window::SinceReset,
        );
        let names: Vec<_> = lints.iter().map(|l| l.lint).collect();
        assert_eq!(names, ["select_star", "unbounded_select"]);
        s.rows = 100.0;
        let (_, lints) = evaluate(
            &[s],
            &oids,
            &tables,
            &AdviceConfig::default(),
            Window::SinceReset,
        );
        assert_eq!(lints.len(), 1);
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(35_000), "35,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
        assert_eq!(si(1.7e9), "1.7 G");
        assert_eq!(si(42.0), "42");
    }
}
