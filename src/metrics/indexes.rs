//! Index health and sequence exhaustion (collector `indexes`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    INDEXES_METRICS;

    INDEX_UNUSED_BYTES, Gauge, "pgvigil_index_unused_bytes", ["target", "datname", "index", "table"],
        "Size (relpages x block_size) of an index with no scan in the statistics window that enforces no constraint; largest first, at most max_series per database.";
    INDEX_REDUNDANT_BYTES, Gauge, "pgvigil_index_redundant_bytes", ["target", "datname", "index", "table", "kind"],
        "Size of an index that another index of its table makes redundant: kind duplicate (same columns, expressions, predicate and operator classes) or prefix (its key columns lead the other's); at most max_series per database.";
    FOREIGN_KEY_UNINDEXED_BYTES, Gauge, "pgvigil_foreign_key_unindexed_bytes", ["target", "datname", "constraint", "table"],
        "Size of the referencing table of a foreign key no valid index leads with (a DELETE or key UPDATE on the referenced table scans it); tables below fk_min_table_bytes are skipped; at most max_series per database.";
    SEQUENCE_USED_RATIO, Gauge, "pgvigil_sequence_used_ratio", ["target", "datname", "sequence", "column"],
        "Share of a sequence's range already used, up to the lower of the sequence's limit and the limit of the column type it feeds (an integer column fed by a bigint sequence ends at 2^31-1); highest first, at most max_series per database.";
    SEQUENCE_REMAINING, Gauge, "pgvigil_sequence_remaining_values", ["target", "datname", "sequence", "column"],
        "Values a sequence can still hand out before it reaches the lower of its own limit and its column type's (increments, not numbers).";
    SEQUENCES_UNREADABLE, Gauge, "pgvigil_sequences_unreadable", ["target", "datname"],
        "Sequences whose last_value pgvigil may not read (no SELECT or USAGE on them); GRANT SELECT ON ALL SEQUENCES IN SCHEMA ... to pgvigil's role.";
    INDEX_FINDINGS, Gauge, "pgvigil_index_findings", ["target", "datname", "check"],
        "Findings of the indexes collector by check (unused_index, duplicate_index, fk_without_index, sequence_exhaustion), including those over max_series.";
    INDEX_FINDINGS_DROPPED, Gauge, "pgvigil_index_findings_dropped", ["target", "datname", "check"],
        "Findings of a check with no series of their own because max_series was reached (the status page, the API and pgvigil advise list all of them).";
}
