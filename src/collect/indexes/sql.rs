//! The catalog queries of the indexes collector. Every one reads catalogs and statistics
//! only: no `pg_relation_size`, `pg_get_expr` or `pg_get_indexdef` (each of which opens the
//! relation and so would queue behind an ACCESS EXCLUSIVE lock); sizes are `relpages` x
//! `block_size`, and expressions and predicates are compared as their stored node trees with
//! the parse locations taken out.
//!
//! | query | 13 to 15 | 16+ |
//! |---|---|---|
//! | [`usage_sql`] | `idx_scan` | `idx_scan` and `last_idx_scan` |
//! | the others | the same SQL | the same SQL |

/// The statistics window (seconds since `stats_reset` of this database, else since the
/// server started), whether commit timestamps are tracked, and the role's name. One row.
pub const WINDOW_SQL: &str = "
SELECT extract(epoch FROM now() - coalesce(
           (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
           pg_postmaster_start_time()))::float8,
       current_setting('track_commit_timestamp')::bool,
       current_user::text";

/// Every valid index of a user table: its keys, operator classes, collations, expression and
/// predicate trees (locations stripped, so two `CREATE INDEX` texts of the same index compare
/// equal), what it enforces, its size and its key columns' names ('' for an expression).
pub const INDEXES_SQL: &str = "
SELECT x.indexrelid, x.indrelid,
       format('%I.%I', n.nspname, ci.relname), format('%I.%I', n.nspname, ct.relname),
       am.amname::text,
       string_to_array(x.indkey::text, ' ')::int2[],
       x.indnkeyatts::int4,
       string_to_array(x.indclass::text, ' ')::oid[],
       string_to_array(x.indcollation::text, ' ')::oid[],
       regexp_replace(coalesce(x.indexprs::text, ''), ' :location -?[0-9]+', '', 'g'),
       regexp_replace(coalesce(x.indpred::text, ''), ' :location -?[0-9]+', '', 'g'),
       x.indisunique, x.indisprimary, x.indisexclusion,
       (SELECT c.conname::text FROM pg_constraint c
         WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid
           AND c.contype IN ('p', 'u', 'x') LIMIT 1),
       (ci.relpages::int8 * current_setting('block_size')::int8),
       ARRAY(SELECT coalesce(a.attname::text, '')
               FROM unnest(string_to_array(x.indkey::text, ' ')::int2[]) WITH ORDINALITY AS k(attnum, i)
               LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
              ORDER BY k.i),
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = x.indexrelid)
  FROM pg_index x
  JOIN pg_class ci ON ci.oid = x.indexrelid
  JOIN pg_class ct ON ct.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = ct.relnamespace
  JOIN pg_am am ON am.oid = ci.relam
 WHERE x.indisvalid AND x.indislive
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
 ORDER BY 4, 3";

/// Scans per index (and, on 16+, seconds since the last one), with the index's age from its
/// catalog row's commit timestamp when `track_commit_timestamp` is on (`$1`).
pub fn usage_sql(version_num: i32) -> &'static str {
    if version_num >= 160000 {
        "
SELECT s.indexrelid, s.idx_scan,
       extract(epoch FROM now() - s.last_idx_scan)::float8,
       CASE WHEN $1 THEN extract(epoch FROM now() - pg_xact_commit_timestamp(c.xmin))::float8 END
  FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid"
    } else {
        "
SELECT s.indexrelid, s.idx_scan, NULL::float8,
       CASE WHEN $1 THEN extract(epoch FROM now() - pg_xact_commit_timestamp(c.xmin))::float8 END
  FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid"
    }
}

/// Every foreign key of a user table that is not a partition's copy of its parent's: the
/// referencing table, its key columns (numbers and names), the referenced table and the
/// referencing table's size (a partitioned table's is its partitions').
pub const FOREIGN_KEYS_SQL: &str = "
SELECT c.conrelid, format('%I.%I', n.nspname, t.relname), c.conname::text,
       format('%I.%I', rn.nspname, r.relname),
       c.conkey,
       ARRAY(SELECT a.attname::text
               FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
              ORDER BY k.i),
       (CASE WHEN t.relkind = 'p'
             THEN (SELECT coalesce(sum(p.relpages), 0)::int8 FROM pg_inherits h
                     JOIN pg_class p ON p.oid = h.inhrelid WHERE h.inhparent = t.oid)
             ELSE t.relpages::int8 END) * current_setting('block_size')::int8,
       t.relkind = 'p'
  FROM pg_constraint c
  JOIN pg_class t ON t.oid = c.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_class r ON r.oid = c.confrelid
  JOIN pg_namespace rn ON rn.oid = r.relnamespace
 WHERE c.contype = 'f' AND c.conparentid = 0
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 2, 3";

/// Every sequence with the column it feeds, if any: owned by it (`serial`, `OWNED BY`:
/// dependency `a`), its identity (`i`), or named in its default (`nextval`, through
/// pg_attrdef). `last_value` only where the role may read it (else NULL and `false`), via
/// `pg_sequence_last_value`, which is NULL for a sequence never used.
pub const SEQUENCES_SQL: &str = "
WITH fed AS (
    SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS attnum
      FROM pg_depend d
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION
    SELECT d.refobjid, ad.adrelid, ad.adnum
      FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
     WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
)
SELECT format('%I.%I', sn.nspname, sc.relname),
       CASE WHEN t.oid IS NOT NULL THEN format('%I.%I', tn.nspname, t.relname) END,
       a.attname::text,
       CASE WHEN a.attnum IS NOT NULL THEN format_type(a.atttypid, NULL) END,
       format_type(s.seqtypid, NULL),
       s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcycle,
       CASE WHEN has_sequence_privilege(s.seqrelid, 'SELECT,USAGE')
            THEN pg_sequence_last_value(s.seqrelid::regclass) END,
       has_sequence_privilege(s.seqrelid, 'SELECT,USAGE'),
       a.attidentity::text
  FROM pg_sequence s
  JOIN pg_class sc ON sc.oid = s.seqrelid
  JOIN pg_namespace sn ON sn.oid = sc.relnamespace
  LEFT JOIN fed f ON f.seq = s.seqrelid
  LEFT JOIN pg_class t ON t.oid = f.rel
  LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = f.rel AND a.attnum = f.attnum
 WHERE NOT pg_is_other_temp_schema(sn.oid)
   AND sn.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1, 2, 3";
