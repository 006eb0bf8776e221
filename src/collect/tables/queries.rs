//! The two queries of the tables poll, and the `include`/`exclude` globs turned into SQL.
//!
//! # Cost (measured, see BENCHMARKS.md "Issue 15, tables")
//!
//! [`COUNTERS_SQL`] runs over every user table, so its per-table work is what grows with the
//! number of tables. It reads `pg_class` directly rather than `pg_stat_user_tables`: the view
//! groups every table with its indexes (for `idx_scan`) and formats nothing pgvigil needs from
//! every table, and an extra join of `pg_index` × `pg_class` for the index pages costs two
//! more passes over `pg_class` (which holds tables, TOAST tables and indexes: 4 rows per
//! table in a typical schema). What is left per table: one `pg_class` row, a hash probe for
//! its TOAST table's pages, and nine `pg_stat_get_*` lookups (one shared-memory fetch, then
//! the backend's snapshot cache). No name is formatted or sent.
//!
//! [`DETAIL_SQL`] runs for the tables that need more than counters (the exported ones and the
//! ones whose counters moved), by oid through `pg_class`'s index: its cost follows
//! `max_tables` and the number of tables written to, not the number of tables.

use std::collections::HashMap;

/// Step 1, every user table: the row-loss counters and the cap's sort key (heap + TOAST
/// pages). The same tables as `pg_stat_user_tables` (`relkind` `r`, `m`, `p` outside the
/// system schemas; TOAST tables live in `pg_toast*` schemas).
pub const COUNTERS_SQL: &str = "
SELECT c.oid, pg_stat_get_live_tuples(c.oid), pg_stat_get_dead_tuples(c.oid),
       pg_stat_get_tuples_inserted(c.oid), pg_stat_get_tuples_deleted(c.oid),
       pg_stat_get_ins_since_vacuum(c.oid),
       pg_stat_get_vacuum_count(c.oid) + pg_stat_get_autovacuum_count(c.oid),
       pg_stat_get_analyze_count(c.oid) + pg_stat_get_autoanalyze_count(c.oid),
       c.relpages::int8 + coalesce(t.relpages, 0)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
 WHERE c.relkind IN ('r', 'm', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'";

/// Appended to [`COUNTERS_SQL`] when `include` or `exclude` is set: `$1` and `$2` are the
/// globs as `LIKE` patterns ([`like_patterns`]) over the unquoted `schema.table`, compared
/// character by character (`COLLATE "C"`) like [`crate::config::glob`].
pub const FILTER_SQL: &str = "
   AND (cardinality($1::text[]) = 0
        OR (n.nspname || '.' || c.relname) COLLATE \"C\" LIKE ANY ($1::text[]))
   AND NOT ((n.nspname || '.' || c.relname) COLLATE \"C\" LIKE ANY ($2::text[]))";

/// Step 3, by oid (`$1`): the name, the exported detail and the size (heap + TOAST + index
/// pages × block size, as of the last vacuum or analyze).
pub const DETAIL_SQL: &str = "
SELECT c.oid, format('%I.%I', n.nspname, c.relname), n.nspname::text, c.relname::text,
       c.reltuples::float8, pg_stat_get_tuples_updated(c.oid),
       extract(epoch FROM pg_stat_get_last_vacuum_time(c.oid))::float8,
       extract(epoch FROM pg_stat_get_last_autovacuum_time(c.oid))::float8,
       extract(epoch FROM pg_stat_get_last_analyze_time(c.oid))::float8,
       extract(epoch FROM pg_stat_get_last_autoanalyze_time(c.oid))::float8,
       ((c.relpages::int8 + coalesce(t.relpages, 0)
         + coalesce((SELECT sum(i.relpages)::int8
                       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                      WHERE x.indrelid = c.oid), 0))
        * current_setting('block_size')::int8)::int8
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
 WHERE c.oid = ANY($1)";

/// A glob of `[targets.tables] include`/`exclude` as a `LIKE` pattern: `*` → `%`, `?` → `_`,
/// and `%`, `_`, `\` escaped (with `LIKE`'s default escape `\`), so both match the same texts.
pub fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// [`like_pattern`] of each glob.
pub fn like_patterns(globs: &[String]) -> Vec<String> {
    globs.iter().map(|g| like_pattern(g)).collect()
}

/// One table's row of [`DETAIL_SQL`].
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    /// `schema.table`, quoted where PostgreSQL would need quotes.
    pub table: String,
    /// The schema, unquoted.
    pub schema: String,
    /// The table's name, unquoted.
    pub name: String,
    /// `reltuples`.
    pub reltuples: f64,
    /// `n_tup_upd`.
    pub updated: i64,
    /// Unix times of the last vacuum, autovacuum, analyze and autoanalyze.
    pub maintenance: [Option<f64>; 4],
    /// Heap + TOAST + index pages × block size.
    pub size_bytes: i64,
}

/// Run [`DETAIL_SQL`] for `oids`; a table dropped since step 1 has no entry.
pub async fn details(
    ctx: &crate::collect::PollContext<'_>,
    oids: &[u32],
) -> Result<HashMap<u32, Detail>, tokio_postgres::Error> {
    if oids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = ctx.query(DETAIL_SQL, &[&oids]).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let detail = Detail {
            table: row.try_get(1)?,
            schema: row.try_get(2)?,
            name: row.try_get(3)?,
            reltuples: row.try_get::<_, Option<f64>>(4)?.unwrap_or_default(),
            updated: row.try_get(5)?,
            maintenance: [
                row.try_get(6)?,
                row.try_get(7)?,
                row.try_get(8)?,
                row.try_get(9)?,
            ],
            size_bytes: row.try_get(10)?,
        };
        out.insert(row.try_get::<_, u32>(0)?, detail);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns_that_match_the_same_names() {
        assert_eq!(like_pattern("public.*"), "public.%");
        assert_eq!(like_pattern("*.audit_?"), "%.audit\\__");
        assert_eq!(like_pattern("a%b\\c"), "a\\%b\\\\c");
    }
}
