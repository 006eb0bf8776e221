//! From tokens to what a statement is: its operation and main table (the summary), its
//! normalised text and fingerprint, and the rulebook lints. See the [module docs](super).

use super::lexer::{Lexer, Tok};
use super::{Lint, MAX_SUMMARY_LEN, StatementFacts, truncate};

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
pub(super) struct Derived {
    pub(super) operation: &'static str,
    pub(super) summary: String,
    pub(super) facts: StatementFacts,
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
pub(super) fn derive(sql: &str) -> Derived {
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
