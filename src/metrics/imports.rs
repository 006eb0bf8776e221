//! Import audit-table reconciliation (collector `imports`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    IMPORTS_METRICS;

    IMPORT_AUDIT_TABLES, Gauge, "pgvigil_import_audit_tables", ["target"],
        "Import audit tables being read (configured, or found by the name import_audit); 0 means no import is checked.";
    IMPORT_CHECKS, Counter, "pgvigil_import_checks_total", ["target", "result"],
        "Reconciliations of committed imports against their target tables, by verdict (ok, shortfall, surplus, mismatch, confirming, unknown, invalid).";
    IMPORTS, Gauge, "pgvigil_imports", ["target", "status"],
        "Imports in the audit tables that are running or finished within the re-check window, by audit status.";
    IMPORT_VERDICTS, Gauge, "pgvigil_import_verdicts", ["target", "verdict"],
        "Imports by pgvigil's current verdict (ok, shortfall, surplus, mismatch, stalled, aborted, invalid, running, confirming, failed, unknown).";
    IMPORT_MISSING_ROWS, Gauge, "pgvigil_import_missing_rows", ["target", "table"],
        "Rows missing from a target table over its confirmed import shortfalls: expected minus rejected minus skipped minus committed.";
    IMPORT_LAST_VERIFIED, Gauge, "pgvigil_import_last_verified_timestamp_seconds", ["target", "table"],
        "Unix time an import into the table was last counted and found complete.";
}
