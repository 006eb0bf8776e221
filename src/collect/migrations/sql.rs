//! The SQL of the migrations collector. Every query reads the catalogs, `pg_locks`, the
//! progress views, or a migration table found in the catalogs; names are quoted by the
//! server (`format('%I.%I')`, `quote_ident`, `regclass` output) before they are put in a query.
//! PostgreSQL 13 to 18 have the same columns for all of them.

use crate::config::MigrationTool;

/// Migration tables looked at per database (found and configured).
pub const MAX_TABLES: i64 = 20;

/// Rows read from one Flyway or sqlx table (newest first): enough for any failed migration,
/// which is always among the latest.
pub const MAX_RECORDS: i64 = 1000;

/// Progress rows read per database (running CREATE INDEX / REINDEX / CLUSTER / VACUUM FULL).
pub const MAX_OPERATIONS: i64 = 20;

/// Candidate migration tables: those named like a tool's default table (`$1`, any schema but
/// the system ones) and the configured ones (`$2`, quoted names resolved with `to_regclass`,
/// which takes no lock); with their columns, whether pgvigil may read them, and whether an
/// ACCESS EXCLUSIVE lock is held or awaited on them. `$3`: the most to return.
pub const CANDIDATES_SQL: &str = "
WITH wanted AS (
  SELECT to_regclass(w.name) AS rel, w.ord
    FROM unnest($2::text[]) WITH ORDINALITY AS w(name, ord)
)
SELECT format('%I.%I', n.nspname, c.relname),
       c.relname::text,
       (SELECT min(w.ord) FROM wanted w WHERE w.rel = c.oid)::int8,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       coalesce(array_agg(format_type(a.atttypid, NULL) ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       has_table_privilege(c.oid, 'SELECT'),
       EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'relation' AND l.relation = c.oid
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.mode = 'AccessExclusiveLock')
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND ((c.relname = ANY($1::text[])
         AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         AND n.nspname NOT LIKE 'pg\\_toast%')
        OR c.oid IN (SELECT rel FROM wanted WHERE rel IS NOT NULL))
 GROUP BY c.oid, n.nspname, c.relname
 ORDER BY 1
 LIMIT $3";

/// The rows of `tool`'s table `table` (already quoted) that [`super::tools::interpret`] reads,
/// as (version, description, script, installed_on, success); `$1`: the most rows.
pub fn records_sql(tool: MigrationTool, table: &str) -> String {
    match tool {
        MigrationTool::GolangMigrate => format!(
            "SELECT version::text, ''::text, ''::text, NULL::text, NOT dirty
  FROM {table} ORDER BY version DESC LIMIT least($1::int8, 1)"
        ),
        // The latest row of each version (repeatable migrations: of each script), newest
        // first: a failed attempt that a later success of the same version replaced is over.
        MigrationTool::Flyway => format!(
            "SELECT coalesce(version::text, ''), coalesce(description::text, ''),
       coalesce(script::text, ''), installed_on::text, success
  FROM (SELECT DISTINCT ON (coalesce('V' || version::text, 'R' || script::text)) *
          FROM {table}
         ORDER BY coalesce('V' || version::text, 'R' || script::text), installed_rank DESC) latest
 ORDER BY installed_rank DESC
 LIMIT $1::int8"
        ),
        MigrationTool::Sqlx => format!(
            "SELECT version::text, coalesce(description::text, ''), ''::text, installed_on::text, success
  FROM {table} ORDER BY version DESC LIMIT $1::int8"
        ),
        MigrationTool::Alembic => format!(
            "SELECT version_num::text, ''::text, ''::text, NULL::text, true
  FROM {table} ORDER BY 1 LIMIT $1::int8"
        ),
    }
}

/// INVALID indexes that no running CREATE INDEX / REINDEX of their table is building (its
/// progress row names the table), at most `$1`, with the total. Sizes from `relpages`: no
/// lock, no file access.
pub const INVALID_INDEXES_SQL: &str = "
SELECT i.indexrelid::regclass::text,
       i.indrelid::regclass::text,
       (ic.relpages::int8 * current_setting('block_size')::int8)::int8,
       i.indisunique,
       tc.relkind = 'p',
       count(*) OVER ()
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_class tc ON tc.oid = i.indrelid
 WHERE NOT i.indisvalid
   AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                    WHERE p.datname = current_database() AND p.relid = i.indrelid)
 ORDER BY 1
 LIMIT $1";

/// Table constraints never validated (a partition's copy of its parent's left out: validating
/// the parent's validates it), at most `$1`, with the total.
pub const NOT_VALID_SQL: &str = "
SELECT quote_ident(con.conname),
       con.conrelid::regclass::text,
       con.contype::text,
       pg_get_constraintdef(con.oid),
       count(*) OVER ()
  FROM pg_constraint con
 WHERE NOT con.convalidated AND con.conrelid <> 0 AND con.conparentid = 0
 ORDER BY 2, 1
 LIMIT $1";

/// Running CREATE INDEX / REINDEX and CLUSTER / VACUUM FULL of this database, at most `$1`:
/// pid, command, phase, table, index, blocks total and done, tuples total and done, seconds
/// since its statement started.
pub const OPERATIONS_SQL: &str = "
SELECT * FROM (
SELECT p.pid, p.command, p.phase, coalesce(p.relid::regclass::text, ''),
       coalesce(nullif(p.index_relid, 0::oid)::regclass::text, ''),
       p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done,
       extract(epoch FROM clock_timestamp() - a.query_start)::float8
  FROM pg_stat_progress_create_index p
  LEFT JOIN pg_stat_activity a ON a.pid = p.pid
 WHERE p.datname = current_database()
UNION ALL
SELECT p.pid, p.command, p.phase, coalesce(p.relid::regclass::text, ''),
       coalesce(nullif(p.cluster_index_relid, 0::oid)::regclass::text, ''),
       p.heap_blks_total, p.heap_blks_scanned, 0::int8, 0::int8,
       extract(epoch FROM clock_timestamp() - a.query_start)::float8
  FROM pg_stat_progress_cluster p
  LEFT JOIN pg_stat_activity a ON a.pid = p.pid
 WHERE p.datname = current_database()
) o ORDER BY 1 LIMIT $1::int8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_the_quoted_table_with_a_limit() {
        for tool in MigrationTool::ALL {
            let sql = records_sql(tool, "\"App\".\"t\"");
            assert!(sql.contains("FROM \"App\".\"t\""), "{sql}");
            assert!(sql.contains("LIMIT"), "{sql}");
        }
        assert!(records_sql(MigrationTool::GolangMigrate, "t").contains("NOT dirty"));
        assert!(records_sql(MigrationTool::Flyway, "t").contains("DISTINCT ON"));
    }
}
