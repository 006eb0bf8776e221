//! From a database's [`Catalog`] to verdicts: unused, duplicate and prefix-redundant
//! indexes, foreign keys no index leads with, and sequences running out. Pure: unit-tested
//! below without a database, and shared by the collector and `pgvigil advise`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::catalog::{Catalog, ForeignKey, IndexDef};
use super::sequences::describe_sequence;
pub use super::sequences::{SequenceUse, sequence_use};
use crate::advice::{Finding, Severity};
use crate::config::IndexesConfig;

/// `check` of an unused index.
pub const UNUSED_INDEX: &str = "unused_index";
/// `check` of a duplicate or prefix-redundant index.
pub const DUPLICATE_INDEX: &str = "duplicate_index";
/// `check` of a foreign key without an index.
pub const FK_WITHOUT_INDEX: &str = "fk_without_index";
/// `check` of a sequence running out.
pub const SEQUENCE_EXHAUSTION: &str = "sequence_exhaustion";
/// Every check of this collector, in report order.
pub const CHECKS: [&str; 4] = [
    UNUSED_INDEX,
    DUPLICATE_INDEX,
    FK_WITHOUT_INDEX,
    SEQUENCE_EXHAUSTION,
];

/// An index nobody scans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnusedIndex {
    /// The index.
    pub index: String,
    /// Its table.
    pub table: String,
    /// Its size.
    pub bytes: i64,
}

/// An index another one makes redundant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedundantIndex {
    /// The one to drop.
    pub index: String,
    /// Its table.
    pub table: String,
    /// `duplicate` or `prefix`.
    pub kind: &'static str,
    /// The one that serves its queries.
    pub kept: String,
    /// Its size.
    pub bytes: i64,
}

/// A foreign key no index leads with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnindexedForeignKey {
    /// The constraint's name.
    pub constraint: String,
    /// The referencing table.
    pub table: String,
    /// The referencing table's size.
    pub bytes: i64,
}

/// What the indexes collector found in one database.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IndexesReport {
    /// Every finding, most severe first.
    pub findings: Vec<Finding>,
    /// Unused indexes, largest first.
    pub unused: Vec<UnusedIndex>,
    /// Redundant indexes, largest first.
    pub redundant: Vec<RedundantIndex>,
    /// Foreign keys without an index, largest table first.
    pub unindexed_foreign_keys: Vec<UnindexedForeignKey>,
    /// Every readable sequence, most used first.
    pub sequences: Vec<SequenceUse>,
    /// Sequences whose last_value the role may not read.
    pub unreadable_sequences: usize,
}

/// Every verdict about one database.
pub fn judge(catalog: &Catalog, config: &IndexesConfig, database: &str) -> IndexesReport {
    let mut report = IndexesReport::default();
    let finding = |check, severity, object: &str, message: String, fix: Option<String>| Finding {
        check,
        severity,
        database: database.to_owned(),
        object: object.to_owned(),
        message,
        fix,
    };
    let mut findings = Vec::new();
    for (u, message) in unused(catalog, config) {
        let fix = format!("DROP INDEX CONCURRENTLY {};", u.index);
        findings.push(finding(
            UNUSED_INDEX,
            Severity::Info,
            &u.index,
            message,
            Some(fix),
        ));
        report.unused.push(u);
    }
    for (r, message, fix) in redundant(&catalog.indexes) {
        let severity = if r.kind == "duplicate" {
            Severity::Warning
        } else {
            Severity::Info
        };
        findings.push(finding(
            DUPLICATE_INDEX,
            severity,
            &r.index,
            message,
            Some(fix),
        ));
        report.redundant.push(r);
    }
    for fk in unindexed_foreign_keys(&catalog.indexes, &catalog.foreign_keys) {
        if fk.table_bytes < config.fk_min_table_bytes as i64 {
            continue;
        }
        let (message, fix) = describe_foreign_key(fk);
        let object = format!("{}.{}", fk.table, quote_ident(&fk.name));
        findings.push(finding(
            FK_WITHOUT_INDEX,
            Severity::Warning,
            &object,
            message,
            Some(fix),
        ));
        report.unindexed_foreign_keys.push(UnindexedForeignKey {
            constraint: fk.name.clone(),
            table: fk.table.clone(),
            bytes: fk.table_bytes,
        });
    }
    for seq in &catalog.sequences {
        if !seq.readable {
            report.unreadable_sequences += 1;
            findings.push(finding(
                SEQUENCE_EXHAUSTION,
                Severity::Info,
                &seq.name,
                format!(
                    "cannot read {}'s last value: no SELECT or USAGE on it",
                    seq.name
                ),
                Some(format!(
                    "GRANT SELECT ON SEQUENCE {} TO {};",
                    seq.name,
                    quote_ident(&catalog.role)
                )),
            ));
            continue;
        }
        let usage = sequence_use(seq);
        let severity = if usage.used_ratio >= config.sequence_critical_ratio {
            Some(Severity::Critical)
        } else if usage.used_ratio >= config.sequence_warning_ratio {
            Some(Severity::Warning)
        } else {
            None
        };
        if let Some(severity) = severity {
            let (message, fix) = describe_sequence(seq, &usage);
            findings.push(finding(
                SEQUENCE_EXHAUSTION,
                severity,
                &seq.name,
                message,
                Some(fix),
            ));
        }
        report.sequences.push(usage);
    }
    report
        .unused
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.index.cmp(&b.index)));
    report
        .redundant
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.index.cmp(&b.index)));
    report
        .unindexed_foreign_keys
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.table.cmp(&b.table)));
    report.sequences.sort_by(|a, b| {
        b.used_ratio
            .total_cmp(&a.used_ratio)
            .then_with(|| a.sequence.cmp(&b.sequence))
    });
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    report.findings = findings;
    report
}

/// Indexes with no scan over a window of at least `unused_min_window` (or, on 16+, none for
/// `unused_stale_after`) that enforce nothing, with the sentence that says so.
fn unused(catalog: &Catalog, config: &IndexesConfig) -> Vec<(UnusedIndex, String)> {
    let usage: HashMap<u32, _> = catalog.usage.iter().map(|u| (u.oid, u)).collect();
    let min_window = config.unused_min_window.as_secs_f64();
    let stale_after = config.unused_stale_after.as_secs_f64();
    let mut out = Vec::new();
    for index in &catalog.indexes {
        if index.enforces() || index.attached {
            continue;
        }
        let Some(u) = usage.get(&index.oid) else {
            continue;
        };
        // An index younger than the statistics has had only its own lifetime to be scanned.
        let window = u.age.map_or(catalog.window, |age| age.min(catalog.window));
        let size = human_bytes(index.bytes);
        let message = if u.scans == 0 && window >= min_window {
            let age_note = if catalog.commit_timestamps || u.age.is_some() {
                ""
            } else {
                " (its own age is unknown without track_commit_timestamp: check it is not new)"
            };
            format!(
                "{} on {} has had no scan in {} of statistics{age_note}; it costs {size} and slows every write to the table",
                index.name,
                index.table,
                human_seconds(window)
            )
        } else if let Some(since) = u.since_last_scan.filter(|s| *s >= stale_after) {
            format!(
                "{} on {} was last scanned {} ago ({} scans in all); it costs {size} and slows every write to the table",
                index.name,
                index.table,
                human_seconds(since),
                u.scans
            )
        } else {
            continue;
        };
        out.push((
            UnusedIndex {
                index: index.name.clone(),
                table: index.table.clone(),
                bytes: index.bytes,
            },
            message,
        ));
    }
    out
}

/// Which of two indexes to keep when they are duplicates: the one that enforces more, then
/// the older (lower oid).
fn keep_rank(index: &IndexDef) -> (u8, u8, u8, std::cmp::Reverse<u32>) {
    (
        u8::from(index.primary),
        u8::from(index.constraint.is_some()),
        u8::from(index.unique),
        std::cmp::Reverse(index.oid),
    )
}

/// Duplicate and prefix-redundant indexes, each with its sentence and fix; an index is
/// reported once.
fn redundant(indexes: &[IndexDef]) -> Vec<(RedundantIndex, String, String)> {
    let mut by_table: BTreeMap<u32, Vec<&IndexDef>> = BTreeMap::new();
    for index in indexes {
        by_table.entry(index.table_oid).or_default().push(index);
    }
    let mut out = Vec::new();
    for group in by_table.values() {
        let mut reported: HashSet<u32> = HashSet::new();
        // Duplicates: everything that defines what the index holds is equal.
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if !same_definition(a, b) || reported.contains(&a.oid) || reported.contains(&b.oid)
                {
                    continue;
                }
                let (keep, drop) = if keep_rank(a) >= keep_rank(b) {
                    (a, b)
                } else {
                    (b, a)
                };
                if drop.attached {
                    continue;
                }
                reported.insert(drop.oid);
                let message = format!(
                    "{} duplicates {} on {} ({}): same columns, operator classes and predicate; it costs {} and every write updates both",
                    drop.name,
                    keep.name,
                    drop.table,
                    keep.key_names().join(", "),
                    human_bytes(drop.bytes)
                );
                out.push((
                    RedundantIndex {
                        index: drop.name.clone(),
                        table: drop.table.clone(),
                        kind: "duplicate",
                        kept: keep.name.clone(),
                        bytes: drop.bytes,
                    },
                    message,
                    drop_fix(drop),
                ));
            }
        }
        // Prefixes: a plain btree whose key columns lead another's.
        for short in group {
            if reported.contains(&short.oid) || short.enforces() || short.attached {
                continue;
            }
            let Some(long) = group.iter().find(|long| {
                long.oid != short.oid && !reported.contains(&long.oid) && is_prefix(short, long)
            }) else {
                continue;
            };
            reported.insert(short.oid);
            let message = format!(
                "{} ({}) on {} is a leading prefix of {} ({}), which serves the same lookups; it costs {}",
                short.name,
                short.key_names().join(", "),
                short.table,
                long.name,
                long.key_names().join(", "),
                human_bytes(short.bytes)
            );
            out.push((
                RedundantIndex {
                    index: short.name.clone(),
                    table: short.table.clone(),
                    kind: "prefix",
                    kept: long.name.clone(),
                    bytes: short.bytes,
                },
                message,
                drop_fix(short),
            ));
        }
    }
    out
}

fn same_definition(a: &IndexDef, b: &IndexDef) -> bool {
    a.method == b.method
        && a.columns == b.columns
        && a.key_columns == b.key_columns
        && a.opclasses == b.opclasses
        && a.collations == b.collations
        && a.expressions == b.expressions
        && a.predicate == b.predicate
        && (a.exclusion == b.exclusion)
}

/// Whether `short`'s key columns (plain columns, no INCLUDE) lead `long`'s, with the same
/// operator classes, collations and predicate, both btree.
fn is_prefix(short: &IndexDef, long: &IndexDef) -> bool {
    let n = short.key_columns;
    short.method == "btree"
        && long.method == "btree"
        && n > 0
        && n < long.key_columns
        && short.columns.len() == n
        && short.predicate == long.predicate
        && short.expressions.is_empty()
        && short.columns[..n] == long.columns[..n]
        && short.opclasses.get(..n) == long.opclasses.get(..n)
        && short.collations.get(..n) == long.collations.get(..n)
}

fn drop_fix(index: &IndexDef) -> String {
    match &index.constraint {
        Some(constraint) => format!(
            "ALTER TABLE {} DROP CONSTRAINT {};  -- it backs a constraint: check nothing (a foreign key) depends on it first",
            index.table,
            quote_ident(constraint)
        ),
        None => format!("DROP INDEX CONCURRENTLY {};", index.name),
    }
}

/// Foreign keys whose columns no valid, non-partial btree (or single-column hash) index
/// starts with, in any order.
pub fn unindexed_foreign_keys<'a>(
    indexes: &[IndexDef],
    foreign_keys: &'a [ForeignKey],
) -> Vec<&'a ForeignKey> {
    foreign_keys
        .iter()
        .filter(|fk| {
            let wanted: HashSet<i16> = fk.columns.iter().copied().collect();
            !indexes.iter().any(|index| {
                let n = fk.columns.len();
                index.table_oid == fk.table_oid
                    && index.predicate.is_empty()
                    && index.key_columns >= n
                    && (index.method == "btree" || (index.method == "hash" && n == 1))
                    && index.columns[..n].iter().copied().collect::<HashSet<_>>() == wanted
            })
        })
        .collect()
}

fn describe_foreign_key(fk: &ForeignKey) -> (String, String) {
    let columns = fk
        .column_names
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let message = format!(
        "foreign key {} of {} ({columns}) references {} but no index of {} starts with {columns}: every DELETE or key UPDATE on {} scans {} ({})",
        fk.name,
        fk.table,
        fk.references,
        fk.table,
        fk.references,
        fk.table,
        human_bytes(fk.table_bytes)
    );
    let fix = if fk.partitioned {
        format!(
            "CREATE INDEX ON ONLY {} ({columns});  -- partitioned: then CREATE INDEX CONCURRENTLY on each partition and ALTER INDEX ... ATTACH PARTITION",
            fk.table
        )
    } else {
        format!("CREATE INDEX CONCURRENTLY ON {} ({columns});", fk.table)
    };
    (message, fix)
}

/// An identifier as PostgreSQL would quote it (lower-case letters, digits and `_` bare).
pub fn quote_ident(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `8.0 MiB`, `0 B`.
pub fn human_bytes(bytes: i64) -> String {
    let mut value = bytes.max(0) as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return if unit == "B" {
                format!("{value:.0} {unit}")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}

/// `3.2 days`, `5 hours`, `40 seconds`.
fn human_seconds(seconds: f64) -> String {
    if seconds >= 2.0 * 86_400.0 {
        format!("{:.1} days", seconds / 86_400.0)
    } else if seconds >= 2.0 * 3600.0 {
        format!("{:.1} hours", seconds / 3600.0)
    } else if seconds >= 120.0 {
        format!("{:.0} minutes", seconds / 60.0)
    } else {
        format!("{seconds:.0} seconds")
    }
}

#[cfg(test)]
#[path = "verdicts_tests.rs"]
mod tests;
