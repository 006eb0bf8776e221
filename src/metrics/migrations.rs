//! Migration tools' records and the leftovers of unsafe migrations (collector `migrations`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    MIGRATIONS_METRICS;

    MIGRATION_INFO, Gauge, "pgvigil_migration_info", ["target", "datname", "tool", "table", "version"],
        "1 per migration table read: the schema version its tool recorded last (golang-migrate's version, Flyway's and sqlx's latest successful version, Alembic's head revisions joined by commas).";
    MIGRATION_FAILED, Gauge, "pgvigil_migration_failed", ["target", "datname", "tool", "table"],
        "Failed migrations a migration table records now: golang-migrate dirty, Flyway's latest row of a version with success = false, sqlx success = false; 0 when none.";
    SCHEMA_CHANGES, Counter, "pgvigil_schema_changes_total", ["target", "datname", "tool", "table"],
        "Times the recorded schema version of a migration table moved since pgvigil started (a deploy); the first reading is not counted.";
    SCHEMA_CHANGE_TIMESTAMP, Gauge, "pgvigil_schema_change_timestamp_seconds", ["target", "datname", "tool", "table"],
        "Unix time at which pgvigil last saw the recorded schema version of a migration table move (for dashboard annotations); absent until it has moved once.";
    MIGRATION_TABLE_PROBLEMS, Gauge, "pgvigil_migration_table_problems", ["target", "datname"],
        "Migration tables found or configured that could not be read (unexpected columns, permission denied, locked); the status page and the log name each and its fix.";
    INVALID_INDEXES, Gauge, "pgvigil_invalid_indexes", ["target", "datname"],
        "Indexes with pg_index.indisvalid = false that no running CREATE INDEX or REINDEX is building: the leftovers of a failed CREATE INDEX CONCURRENTLY.";
    INVALID_INDEX_INFO, Gauge, "pgvigil_invalid_index_info", ["target", "datname", "index", "table"],
        "1 per INVALID index (at most max_objects per database), with the table it belongs to.";
    INVALID_INDEX_SIZE, Gauge, "pgvigil_invalid_index_size_bytes", ["target", "datname", "index"],
        "Size of an INVALID index in bytes (relpages times block_size, as of its last vacuum or analyze): disk and write work spent on an index no query uses.";
    NOT_VALID_CONSTRAINTS, Gauge, "pgvigil_not_valid_constraints", ["target", "datname"],
        "Table constraints added NOT VALID and never validated (pg_constraint.convalidated = false): existing rows were never checked.";
    NOT_VALID_CONSTRAINT_INFO, Gauge, "pgvigil_not_valid_constraint_info", ["target", "datname", "constraint", "table", "type"],
        "1 per NOT VALID constraint (at most max_objects per database); type is check, foreign_key or not_null.";
    SCHEMA_OBJECTS_OMITTED, Gauge, "pgvigil_schema_objects_omitted", ["target", "datname", "kind"],
        "INVALID indexes (kind index) or NOT VALID constraints (kind constraint) beyond max_objects, counted but not exported one by one.";
    SCHEMA_OPERATION_PROGRESS, Gauge, "pgvigil_schema_operation_progress_ratio", ["target", "datname", "pid", "command", "relation", "phase"],
        "Progress (0 to 1) of a running CREATE INDEX / REINDEX (pg_stat_progress_create_index: blocks, else tuples) or CLUSTER / VACUUM FULL rewrite (pg_stat_progress_cluster: heap blocks); absent while the phase has no total.";
    SCHEMA_OPERATION_SECONDS, Gauge, "pgvigil_schema_operation_seconds", ["target", "datname", "pid", "command", "relation"],
        "How long a running CREATE INDEX / REINDEX / CLUSTER / VACUUM FULL has run (its statement's start in pg_stat_activity).";
}
