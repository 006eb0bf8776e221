//! Table statistics and exact counts (collector `tables`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    TABLES_METRICS;

    TABLE_LIVE_ROWS, Gauge, "pgvigil_table_live_rows", ["target", "table"],
        "Estimated live rows of a table (pg_stat_user_tables.n_live_tup).";
    TABLE_DEAD_ROWS, Gauge, "pgvigil_table_dead_rows", ["target", "table"],
        "Estimated dead rows of a table (n_dead_tup): deleted, updated or rolled back, not yet vacuumed.";
    TABLE_RELTUPLES, Gauge, "pgvigil_table_reltuples", ["target", "table"],
        "The planner's row estimate of a table (pg_class.reltuples) as of its last vacuum or analyze; -1 if never.";
    TABLE_SIZE, Gauge, "pgvigil_table_size_bytes", ["target", "table"],
        "Size of a table with its indexes and TOAST, from relpages as of its last vacuum or analyze (taken without locking the table).";
    TABLE_INSERTED, Counter, "pgvigil_table_rows_inserted_total", ["target", "table"],
        "Rows inserted into a table, including inserts later rolled back (n_tup_ins).";
    TABLE_UPDATED, Counter, "pgvigil_table_rows_updated_total", ["target", "table"],
        "Rows updated in a table (n_tup_upd).";
    TABLE_DELETED, Counter, "pgvigil_table_rows_deleted_total", ["target", "table"],
        "Rows deleted from a table (n_tup_del); TRUNCATE is not counted here.";
    TABLE_LAST_MAINTENANCE, Gauge, "pgvigil_table_last_maintenance_timestamp_seconds", ["target", "table", "operation"],
        "Unix time of a table's last vacuum, autovacuum, analyze or autoanalyze (operation label); absent if never.";
    TABLES_EXPORTED, Gauge, "pgvigil_tables_exported", ["target"],
        "User tables whose statistics are exported after the include and exclude filters and the max_tables cap.";
    TABLES_OMITTED, Gauge, "pgvigil_tables_omitted", ["target"],
        "User tables matching the filters but cut off by max_tables (the smallest ones); raise max_tables to see them.";
    TABLE_EXACT_ROWS, Gauge, "pgvigil_table_exact_rows", ["target", "table"],
        "Rows of an allow-listed table by an exact count(*), as of the last successful count.";
    TABLE_EXACT_COUNT_TIMESTAMP, Gauge, "pgvigil_table_exact_count_timestamp_seconds", ["target", "table"],
        "Unix time of the last successful exact count of an allow-listed table.";
    TABLE_EXACT_COUNT_DURATION, Gauge, "pgvigil_table_exact_count_duration_seconds", ["target", "table"],
        "How long the last exact count of an allow-listed table took.";
    TABLE_EXACT_COUNTS, Counter, "pgvigil_table_exact_counts_total", ["target", "result"],
        "Exact counts by result: ok, error (timeout, permission), skipped (over budget or a run would overlap).";
}
