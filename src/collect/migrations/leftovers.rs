//! The leftovers of unsafe migrations, without a database: INVALID indexes, NOT VALID
//! constraints and running rewrites or index builds, and the findings (with their fix) they
//! make. Unit-tested below.

use serde::Serialize;

use crate::advice::{Finding, Severity};

/// An index with `pg_index.indisvalid = false` that nothing is building.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidIndex {
    /// The index, as `regclass` prints it.
    pub index: String,
    /// Its table.
    pub table: String,
    /// `relpages` times `block_size`.
    pub size_bytes: i64,
    /// A unique index (its build failed on a duplicate, typically).
    pub unique: bool,
    /// On a partitioned table: created `ON ONLY` the parent, some partition's index not
    /// attached yet.
    pub partitioned: bool,
}

impl InvalidIndex {
    /// What to run.
    pub fn fix(&self) -> String {
        let index = &self.index;
        if self.partitioned {
            return format!(
                "ALTER INDEX {index} ATTACH PARTITION <index of each partition>; (an index created ON ONLY a partitioned table is valid once every partition's index is attached)"
            );
        }
        let first = if self.unique {
            "remove the duplicate values that made the build fail, then "
        } else {
            ""
        };
        format!(
            "{first}REINDEX INDEX CONCURRENTLY {index}; or DROP INDEX CONCURRENTLY {index}; and CREATE INDEX CONCURRENTLY it again"
        )
    }

    /// The finding.
    pub fn finding(&self, database: &str) -> Finding {
        let unique = if self.unique {
            "; as a unique index it still rejects duplicates"
        } else {
            ""
        };
        Finding {
            check: "invalid_index",
            severity: Severity::Critical,
            database: database.to_owned(),
            object: self.index.clone(),
            message: format!(
                "index {} on {} is INVALID ({} bytes), left by a failed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY: no query uses it, yet every write to {} still updates it{unique}",
                self.index, self.table, self.size_bytes, self.table
            ),
            fix: Some(self.fix()),
        }
    }
}

/// A table constraint added `NOT VALID` and never validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotValidConstraint {
    /// Its name, quoted as needed.
    pub name: String,
    /// Its table, as `regclass` prints it.
    pub table: String,
    /// `check`, `foreign_key`, `not_null`, or the raw `contype`.
    pub kind: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
}

impl NotValidConstraint {
    /// `contype` as a label.
    pub fn kind_of(contype: &str) -> String {
        match contype {
            "c" => "check".to_owned(),
            "f" => "foreign_key".to_owned(),
            "n" => "not_null".to_owned(),
            other => other.to_owned(),
        }
    }

    /// What to run.
    pub fn fix(&self) -> String {
        format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}; (takes SHARE UPDATE EXCLUSIVE: reads and writes go on while it checks the existing rows)",
            self.table, self.name
        )
    }

    /// The finding.
    pub fn finding(&self, database: &str) -> Finding {
        Finding {
            check: "not_valid_constraint",
            severity: Severity::Warning,
            database: database.to_owned(),
            object: format!("{}.{}", self.table, self.name),
            message: format!(
                "constraint {} on {} ({}) was added NOT VALID and never validated: new rows are checked, the existing ones never were",
                self.name, self.table, self.definition
            ),
            fix: Some(self.fix()),
        }
    }
}

/// A CREATE INDEX / REINDEX or CLUSTER / VACUUM FULL running in the database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    /// Its backend.
    pub pid: i32,
    /// `CREATE INDEX CONCURRENTLY`, `REINDEX`, `CLUSTER`, `VACUUM FULL`, ...
    pub command: String,
    /// The progress view's phase.
    pub phase: String,
    /// The table.
    pub table: String,
    /// The index built (or the one CLUSTER orders by), if any.
    pub index: String,
    /// Blocks to scan and scanned (heap blocks for CLUSTER / VACUUM FULL).
    pub blocks: (i64, i64),
    /// Tuples to process and processed (index builds).
    pub tuples: (i64, i64),
    /// Seconds since its statement started.
    pub seconds: Option<f64>,
}

impl Operation {
    /// Done over total, by blocks where the phase counts them, else by tuples; `None` when
    /// the phase has no total.
    pub fn ratio(&self) -> Option<f64> {
        let of = |(total, done): (i64, i64)| {
            (total > 0).then(|| (done as f64 / total as f64).clamp(0.0, 1.0))
        };
        of(self.blocks).or_else(|| of(self.tuples))
    }

    /// The finding.
    pub fn finding(&self, database: &str) -> Finding {
        let done = match self.ratio() {
            Some(r) => format!("{:.0}% done", 100.0 * r),
            None => "progress not measurable in this phase".to_owned(),
        };
        let age = self
            .seconds
            .map(|s| format!(" after {}", crate::alert::rules::human_seconds(s)))
            .unwrap_or_default();
        let holds = if self.command.contains("CONCURRENTLY") {
            "it lets reads and writes go on"
        } else {
            "it blocks the table's writes (CLUSTER, VACUUM FULL and plain REINDEX also its reads) until it ends"
        };
        Finding {
            check: "rewrite_in_progress",
            severity: Severity::Info,
            database: database.to_owned(),
            object: self.table.clone(),
            message: format!(
                "{} of {} (pid {}) is in phase \"{}\", {done}{age}; {holds}",
                self.command, self.table, self.pid, self.phase
            ),
            fix: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(blocks: (i64, i64), tuples: (i64, i64)) -> Operation {
        Operation {
            pid: 7,
            command: "CREATE INDEX CONCURRENTLY".into(),
            phase: "building index: scanning table".into(),
            table: "contacts".into(),
            index: "contacts_email_idx".into(),
            blocks,
            tuples,
            seconds: Some(65.0),
        }
    }

    #[test]
    fn progress_by_blocks_then_tuples() {
        assert_eq!(op((200, 50), (0, 0)).ratio(), Some(0.25));
        assert_eq!(op((0, 0), (10, 5)).ratio(), Some(0.5));
        assert_eq!(op((0, 0), (0, 0)).ratio(), None);
        assert_eq!(op((10, 12), (0, 0)).ratio(), Some(1.0), "clamped");
        let f = op((200, 50), (0, 0)).finding("app");
        assert!(f.message.contains("25% done after 1m 5s"), "{}", f.message);
        assert!(
            f.message.contains("reads and writes go on"),
            "{}",
            f.message
        );
    }

    #[test]
    fn invalid_index_fix_depends_on_its_kind() {
        let mut ix = InvalidIndex {
            index: "contacts_email_key".into(),
            table: "contacts".into(),
            size_bytes: 8192,
            unique: true,
            partitioned: false,
        };
        let f = ix.finding("app");
        assert_eq!((f.check, f.severity), ("invalid_index", Severity::Critical));
        let fix = f.fix.unwrap();
        assert!(fix.starts_with("remove the duplicate values"), "{fix}");
        assert!(
            fix.contains("DROP INDEX CONCURRENTLY contacts_email_key;"),
            "{fix}"
        );
        assert!(
            fix.contains("REINDEX INDEX CONCURRENTLY contacts_email_key;"),
            "{fix}"
        );
        ix.partitioned = true;
        assert!(
            ix.fix()
                .starts_with("ALTER INDEX contacts_email_key ATTACH PARTITION")
        );
    }

    #[test]
    fn not_valid_constraint_is_validated_in_place() {
        let c = NotValidConstraint {
            name: "orders_customer_fk".into(),
            table: "orders".into(),
            kind: NotValidConstraint::kind_of("f"),
            definition: "FOREIGN KEY (customer_id) REFERENCES customers(id) NOT VALID".into(),
        };
        assert_eq!(c.kind, "foreign_key");
        let f = c.finding("app");
        assert_eq!(f.object, "orders.orders_customer_fk");
        assert!(
            f.fix
                .unwrap()
                .starts_with("ALTER TABLE orders VALIDATE CONSTRAINT orders_customer_fk;")
        );
    }
}
