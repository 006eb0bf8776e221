//! The SQL pgvigil sends for pg_stat_statements, per extension version, and the mapping of its
//! rows into [`StatementRow`]s.
//!
//! The columns depend on the version of the extension installed in the database (which can
//! lag behind the server after `pg_upgrade`), so the dialect is chosen from
//! `pg_extension.extversion`:
//!
//! | extension | server | what changed |
//! |---|---|---|
//! | 1.7 | 12 | `total_time`; no planning time, no WAL, no `toplevel` |
//! | 1.8 | 13 | `total_exec_time` / `total_plan_time`, `wal_bytes` |
//! | 1.9 | 14 | `toplevel`; `pg_stat_statements_info` (`dealloc`, `stats_reset`) |
//! | 1.10 | 15, 16 | JIT and temp block timings (not exported) |
//! | 1.11 | 17 | `blk_read_time` → `shared_blk_read_time` + `local_blk_read_time` (same for write); `stats_since` |
//!
//! Every dialect selects the same column list, so one row mapping serves all of them: the four
//! key columns, the 13 counters as one `float8[]` (the daemon only ever adds and subtracts
//! them), and `stats_since`.
//!
//! # Cost
//!
//! The daemon's part of this query is decoding its rows: at 1,000 entries (a full view at
//! the default `pg_stat_statements.max`) it was half of a fleet target's poll CPU when the
//! counters came as 13 columns, because tokio-postgres pays per column and per row (a
//! bounds and type check and a range lookup per `try_get`, a range per column when the row
//! arrives). As one array, read by [`CounterArray`] straight from the wire bytes without
//! allocating, a row is 6 columns instead of 18.
//! Counters are read with `pg_stat_statements(false)`, which skips the query-text file; the
//! texts are fetched separately, only for the statements that need one.

use std::error::Error;

use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};

use super::delta::{Counter, Counters};

/// Finds the extension, its version and schema, and whether the library is loaded:
/// `pg_stat_statements.max` is only defined when it was preloaded. Always one row.
pub const DETECT_SQL: &str = "
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'),
       (SELECT n.nspname::text
          FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_stat_statements'),
       current_setting('pg_stat_statements.max', true),
       current_database()::text,
       current_user::text,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')";

/// Database and role names, refreshed when an unknown oid shows up.
pub const DATABASES_SQL: &str = "SELECT oid, datname::text FROM pg_database";
/// See [`DATABASES_SQL`].
pub const ROLES_SQL: &str = "SELECT oid, rolname::text FROM pg_roles";

/// The shape of pg_stat_statements in one extension version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dialect {
    /// Extension 1.7 and older (PostgreSQL 12).
    V1_7,
    /// 1.8 (PostgreSQL 13).
    V1_8,
    /// 1.9 (PostgreSQL 14).
    V1_9,
    /// 1.10 (PostgreSQL 15 and 16).
    V1_10,
    /// 1.11 and newer (PostgreSQL 17).
    V1_11,
}

impl Dialect {
    /// The dialect of an `extversion` such as `"1.10"`; `None` if it cannot be parsed.
    pub fn from_extversion(extversion: &str) -> Option<Dialect> {
        let (major, minor) = extversion.trim().split_once('.')?;
        let major: u32 = major.parse().ok()?;
        let minor: u32 = minor.parse().ok()?;
        Some(match (major, minor) {
            (0, _) | (1, 0..=7) => Dialect::V1_7,
            (1, 8) => Dialect::V1_8,
            (1, 9) => Dialect::V1_9,
            (1, 10) => Dialect::V1_10,
            _ => Dialect::V1_11,
        })
    }

    /// Whether `pg_stat_statements_info` exists.
    pub fn has_info_view(self) -> bool {
        self >= Dialect::V1_9
    }

    /// The counters query: one row per entry, columns in [`StatementRow`] order, the counters
    /// as one `float8[]` in [`Counter::ALL`] order.
    pub fn counters_sql(self, schema: &str) -> String {
        let schema = quote_ident(schema);
        let exec = if self >= Dialect::V1_8 {
            "total_exec_time"
        } else {
            "total_time"
        };
        let plan = if self >= Dialect::V1_8 {
            "total_plan_time"
        } else {
            "0::float8"
        };
        let toplevel = if self >= Dialect::V1_9 {
            "toplevel"
        } else {
            "true"
        };
        let wal = if self >= Dialect::V1_8 {
            "wal_bytes::float8"
        } else {
            "0::float8"
        };
        let (blk_read, blk_write, since) = if self >= Dialect::V1_11 {
            (
                "shared_blk_read_time + local_blk_read_time",
                "shared_blk_write_time + local_blk_write_time",
                "extract(epoch FROM stats_since)::float8",
            )
        } else {
            ("blk_read_time", "blk_write_time", "NULL::float8")
        };
        format!(
            "SELECT dbid, userid, queryid, {toplevel} AS toplevel,
       ARRAY[calls::float8, {exec} / 1000.0, {plan} / 1000.0, rows::float8,
             shared_blks_hit::float8, shared_blks_read::float8,
             shared_blks_dirtied::float8, shared_blks_written::float8,
             temp_blks_read::float8, temp_blks_written::float8,
             ({blk_read}) / 1000.0, ({blk_write}) / 1000.0, {wal}]::float8[],
       {since}
  FROM {schema}.pg_stat_statements(false)"
        )
    }

    /// `dealloc` and `stats_reset` (epoch seconds), for dialects with the info view.
    pub fn info_sql(self, schema: &str) -> Option<String> {
        self.has_info_view().then(|| {
            format!(
                "SELECT dealloc::float8, extract(epoch FROM stats_reset)::float8 FROM {}.pg_stat_statements_info",
                quote_ident(schema)
            )
        })
    }

    /// Query texts of the given queryids (`$1 bigint[]`), cut by the server to `$2 int`
    /// characters (`left(query, $2)`), with whether it cut. The server still reads its text
    /// file, which is why this runs only when a statement needs a text pgvigil does not have;
    /// the cut keeps a 10 MB statement text from travelling to (and being held by) pgvigil.
    /// `left()` and the `query` column are the same in every extension version.
    pub fn texts_sql(self, schema: &str) -> String {
        format!(
            "SELECT DISTINCT ON (queryid) queryid, left(query, $2), length(query) > $2 \
               FROM {}.pg_stat_statements(true) WHERE queryid = ANY($1)",
            quote_ident(schema)
        )
    }
}

/// One row of pg_stat_statements, counters in seconds (not milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StatementRow {
    /// Database oid.
    pub dbid: u32,
    /// Role oid.
    pub userid: u32,
    /// `None` when the monitoring role may not see this user's statements.
    pub queryid: Option<i64>,
    /// Executed at top level (always `true` before extension 1.9).
    pub toplevel: bool,
    /// The cumulative counters.
    pub counters: Counters,
    /// When this entry's statistics started (extension 1.11+), epoch seconds.
    pub stats_since: Option<f64>,
}

impl StatementRow {
    /// Map a row of [`Dialect::counters_sql`].
    pub fn from_row(row: &Row) -> Result<StatementRow, tokio_postgres::Error> {
        Ok(StatementRow {
            dbid: row.try_get(0)?,
            userid: row.try_get(1)?,
            queryid: row.try_get(2)?,
            toplevel: row.try_get::<_, Option<bool>>(3)?.unwrap_or(true),
            counters: row.try_get::<_, CounterArray>(4)?.0,
            stats_since: row.try_get(5)?,
        })
    }
}

/// The counters column of [`Dialect::counters_sql`]: a one-dimensional `float8[]` of
/// [`Counter::ALL`]'s length, decoded from PostgreSQL's binary array format in place (header:
/// dimensions, null flag, element type, then per dimension its length and lower bound; then
/// each element as a length, -1 for NULL, and 8 big-endian bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterArray(pub Counters);

impl<'a> FromSql<'a> for CounterArray {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        decode_counters(raw)
            .map(CounterArray)
            .ok_or_else(|| "counters: not a float8[] of one float8 per counter".into())
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::FLOAT8_ARRAY
    }
}

/// [`CounterArray`]'s decoding: fixed offsets, no allocation (it runs for every entry of
/// the view at every poll). Header: dimensions, whether there are NULLs, element type, then
/// the one dimension's length and lower bound; each element a length (-1: NULL) and data.
fn decode_counters(raw: &[u8]) -> Option<Counters> {
    let word = |at: usize| Some(i32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?));
    let float8 = i32::try_from(Type::FLOAT8.oid()).ok()?;
    let length = i32::try_from(Counter::ALL.len()).ok()?;
    if word(0)? != 1 || word(8)? != float8 || word(12)? != length {
        return None;
    }
    let mut counters = Counters::default();
    let mut at = 20;
    for counter in Counter::ALL {
        let value = match word(at)? {
            // NULL counters do not occur in practice; they count as zero rather than
            // failing the whole poll on one odd row.
            -1 => {
                at += 4;
                0.0
            }
            8 => {
                let bytes = raw.get(at + 4..at + 12)?.try_into().ok()?;
                at += 12;
                f64::from_be_bytes(bytes)
            }
            _ => return None,
        };
        counters[counter] = value.max(0.0);
    }
    Some(counters)
}

/// A quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Characters of raw query text fetched for a label of `max_chars` characters: room for the
/// whitespace [`normalise_query_text`] collapses, bounded so a huge text never travels whole.
pub fn fetched_text_chars(max_chars: usize) -> i32 {
    i32::try_from(max_chars.saturating_mul(4).saturating_add(64)).unwrap_or(i32::MAX)
}

/// [`normalise_query_text`] of a text the server cut (`cut`): marked with `…` even when the
/// collapsed whitespace left it shorter than `max_chars`.
pub fn normalise_fetched_text(text: &str, cut: bool, max_chars: usize) -> String {
    let mut out = normalise_query_text(text, max_chars);
    if cut && !out.ends_with('…') {
        out.push('…');
    }
    out
}

/// Collapse whitespace runs to one space, trim, and cut to `max_chars` characters (marking a
/// cut with `…`), so texts are short, one line, and stable across formatting differences.
pub fn normalise_query_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut chars = 0;
    for word in text.split_whitespace() {
        if chars > 0 {
            if chars >= max_chars {
                out.push('…');
                return out;
            }
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars >= max_chars {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_versions_map_to_dialects() {
        assert_eq!(Dialect::from_extversion("1.6"), Some(Dialect::V1_7));
        assert_eq!(Dialect::from_extversion("1.7"), Some(Dialect::V1_7));
        assert_eq!(Dialect::from_extversion("1.8"), Some(Dialect::V1_8));
        assert_eq!(Dialect::from_extversion("1.9"), Some(Dialect::V1_9));
        assert_eq!(Dialect::from_extversion("1.10"), Some(Dialect::V1_10));
        assert_eq!(Dialect::from_extversion("1.11"), Some(Dialect::V1_11));
        assert_eq!(Dialect::from_extversion("1.12"), Some(Dialect::V1_11));
        assert_eq!(Dialect::from_extversion("x"), None);
    }

    #[test]
    fn postgres_12_uses_total_time_and_no_toplevel() {
        let sql = Dialect::V1_7.counters_sql("public");
        assert!(sql.contains("total_time / 1000.0"), "{sql}");
        assert!(!sql.contains("total_exec_time"), "{sql}");
        assert!(!sql.contains("wal_bytes"), "{sql}");
        assert!(sql.contains("true AS toplevel"), "{sql}");
        assert!(
            sql.contains("\"public\".pg_stat_statements(false)"),
            "{sql}"
        );
        assert!(Dialect::V1_7.info_sql("public").is_none());
    }

    #[test]
    fn postgres_13_splits_plan_and_exec_and_has_wal() {
        let sql = Dialect::V1_8.counters_sql("public");
        assert!(sql.contains("total_exec_time / 1000.0"), "{sql}");
        assert!(sql.contains("total_plan_time / 1000.0"), "{sql}");
        assert!(sql.contains("wal_bytes::float8"), "{sql}");
        assert!(sql.contains("true AS toplevel"), "{sql}");
        assert!(Dialect::V1_8.info_sql("public").is_none());
    }

    #[test]
    fn postgres_14_to_16_have_toplevel_and_the_info_view() {
        for d in [Dialect::V1_9, Dialect::V1_10] {
            let sql = d.counters_sql("public");
            assert!(sql.contains("toplevel AS toplevel"), "{sql}");
            assert!(sql.contains("(blk_read_time) / 1000.0"), "{sql}");
            assert!(sql.contains("NULL::float8\n"), "{sql}");
            let info = d.info_sql("public").unwrap();
            assert!(
                info.contains("\"public\".pg_stat_statements_info"),
                "{info}"
            );
        }
    }

    #[test]
    fn postgres_17_uses_the_renamed_block_time_columns() {
        let sql = Dialect::V1_11.counters_sql("ext");
        assert!(!sql.contains("(blk_read_time)"), "{sql}");
        assert!(
            sql.contains("(shared_blk_read_time + local_blk_read_time) / 1000.0"),
            "{sql}"
        );
        assert!(
            sql.contains("(shared_blk_write_time + local_blk_write_time) / 1000.0"),
            "{sql}"
        );
        assert!(sql.contains("extract(epoch FROM stats_since)"), "{sql}");
    }

    #[test]
    fn every_dialect_selects_the_same_number_of_columns() {
        // The row mapping reads columns by position: 4 keys, the counters, stats_since.
        for d in [
            Dialect::V1_7,
            Dialect::V1_8,
            Dialect::V1_9,
            Dialect::V1_10,
            Dialect::V1_11,
        ] {
            let sql = d.counters_sql("s");
            let select = &sql[..sql.find("FROM \"s\"").unwrap()];
            let (keys, rest) = select.split_once("ARRAY[").unwrap();
            let (counters, since) = rest.split_once("]::float8[]").unwrap();
            // Top-level commas only: the selected expressions have no function calls with
            // several arguments.
            assert_eq!(keys.matches(',').count(), 4, "{d:?}: {sql}");
            assert_eq!(
                counters.matches(',').count() + 1,
                Counter::ALL.len(),
                "{d:?}"
            );
            assert_eq!(since.matches(',').count(), 1, "{d:?}: {sql}");
        }
    }

    /// A `float8[]` in PostgreSQL's binary format: `None` elements are NULL.
    fn float8_array(values: &[Option<f64>]) -> Vec<u8> {
        let mut out = Vec::new();
        let has_nulls = i32::from(values.iter().any(Option::is_none));
        let len = i32::try_from(values.len()).unwrap();
        for word in [1, has_nulls, Type::FLOAT8.oid() as i32, len, 1] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for v in values {
            match v {
                Some(v) => {
                    out.extend_from_slice(&8i32.to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn the_counter_array_is_decoded_in_counter_order_nulls_and_negatives_as_zero() {
        let mut values: Vec<Option<f64>> = (0..13).map(|i| Some(f64::from(i) + 0.5)).collect();
        values[2] = None;
        values[5] = Some(-3.0);
        let raw = float8_array(&values);
        let CounterArray(c) = CounterArray::from_sql(&Type::FLOAT8_ARRAY, &raw).unwrap();
        assert_eq!(c[Counter::Calls], 0.5);
        assert_eq!(c[Counter::ExecSeconds], 1.5);
        assert_eq!(c[Counter::PlanSeconds], 0.0);
        assert_eq!(c[Counter::SharedBlocksRead], 0.0);
        assert_eq!(c[Counter::WalBytes], 12.5);
        assert!(CounterArray::accepts(&Type::FLOAT8_ARRAY));
        assert!(!CounterArray::accepts(&Type::FLOAT8));
    }

    #[test]
    fn a_counter_array_of_another_shape_is_an_error_not_a_guess() {
        let twelve = float8_array(&[Some(1.0); 12]);
        assert!(CounterArray::from_sql(&Type::FLOAT8_ARRAY, &twelve).is_err());
        let full = float8_array(&[Some(1.0); 13]);
        assert!(CounterArray::from_sql(&Type::FLOAT8_ARRAY, &full[..full.len() - 3]).is_err());
        let mut int8 = full.clone();
        int8[8..12].copy_from_slice(&(Type::INT8.oid() as i32).to_be_bytes());
        assert!(CounterArray::from_sql(&Type::FLOAT8_ARRAY, &int8).is_err());
        assert!(CounterArray::from_sql(&Type::FLOAT8_ARRAY, &[]).is_err());
    }

    #[test]
    fn query_texts_are_cut_by_the_server() {
        // Defect 9 of issue 16: a 10 MB text was fetched whole and cut by pgvigil.
        for d in [Dialect::V1_8, Dialect::V1_10, Dialect::V1_11] {
            let sql = d.texts_sql("public");
            assert!(sql.contains("left(query, $2)"), "{sql}");
        }
        assert_eq!(fetched_text_chars(200), 864);
        assert_eq!(fetched_text_chars(usize::MAX), i32::MAX);
        assert_eq!(
            normalise_fetched_text("SELECT      1", true, 200),
            "SELECT 1…"
        );
        assert_eq!(normalise_fetched_text("SELECT 1", false, 200), "SELECT 1");
        assert_eq!(normalise_fetched_text("SELECT 12", true, 8), "SELECT 1…");
    }

    #[test]
    fn schema_names_are_quoted() {
        let sql = Dialect::V1_10.texts_sql("we\"ird");
        assert!(
            sql.contains("\"we\"\"ird\".pg_stat_statements(true)"),
            "{sql}"
        );
    }

    #[test]
    fn query_text_is_one_line_and_truncated() {
        assert_eq!(
            normalise_query_text("  SELECT *\n\tFROM   t\n WHERE id = $1 ", 100),
            "SELECT * FROM t WHERE id = $1"
        );
        assert_eq!(normalise_query_text("SELECT 1", 8), "SELECT 1");
        assert_eq!(normalise_query_text("SELECT 12", 8), "SELECT 1…");
        assert_eq!(normalise_query_text("SELECT  x", 6), "SELECT…");
        // Character, not byte, boundaries.
        assert_eq!(normalise_query_text("SELECT 'äöü'", 10), "SELECT 'äö…");
        assert_eq!(normalise_query_text("", 10), "");
    }
}
