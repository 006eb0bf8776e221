//! Transaction ID wraparound and who holds the xmin horizon back (collector `wraparound`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    WRAPAROUND_METRICS;

    DB_XID_AGE, Gauge, "pgvigil_database_xid_age", ["target", "datname"],
        "Transaction IDs since the database was last frozen (age(datfrozenxid)); autovacuum forces a freeze at autovacuum_freeze_max_age and the server stops at 2^31 minus a safety margin.";
    DB_MXID_AGE, Gauge, "pgvigil_database_mxid_age", ["target", "datname"],
        "Multixact IDs since the database was last frozen (mxid_age(datminmxid)), against autovacuum_multixact_freeze_max_age and 2^31.";
    XMIN_HORIZON_AGE, Gauge, "pgvigil_xmin_horizon_age", ["target", "holder"],
        "Age in transaction IDs of the oldest xmin each kind of holder keeps: backend, replication_slot, replication_slot_catalog, prepared_transaction, standby (hot_standby_feedback); absent when that kind holds none.";
    XMIN_HORIZON_AGE_SECONDS, Gauge, "pgvigil_xmin_horizon_age_seconds", ["target", "holder"],
        "How long the oldest holder of each kind has held it, where the server says: the backend's transaction age, the prepared transaction's age.";
}
