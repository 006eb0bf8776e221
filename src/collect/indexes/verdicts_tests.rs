use std::time::Duration;

use super::*;
use crate::collect::indexes::catalog::{IndexUsage, SequenceDef};

fn index(oid: u32, name: &str, columns: &[i16]) -> IndexDef {
    IndexDef {
        oid,
        table_oid: 1,
        name: format!("public.{name}"),
        table: "public.t".to_owned(),
        method: "btree".to_owned(),
        columns: columns.to_vec(),
        key_columns: columns.len(),
        opclasses: vec![1978; columns.len()],
        collations: vec![0; columns.len()],
        expressions: String::new(),
        predicate: String::new(),
        unique: false,
        primary: false,
        exclusion: false,
        constraint: None,
        bytes: 8192 * i64::from(oid),
        column_names: columns.iter().map(|c| format!("c{c}")).collect(),
        attached: false,
    }
}

fn config() -> IndexesConfig {
    IndexesConfig {
        unused_min_window: Duration::from_secs(3600),
        fk_min_table_bytes: 0,
        ..IndexesConfig::default()
    }
}

fn catalog(indexes: Vec<IndexDef>, usage: &[(u32, i64)]) -> Catalog {
    Catalog {
        window: 7200.0,
        commit_timestamps: false,
        role: "pgvigil".to_owned(),
        usage: usage
            .iter()
            .map(|&(oid, scans)| IndexUsage {
                oid,
                scans,
                since_last_scan: None,
                age: None,
            })
            .collect(),
        indexes,
        ..Catalog::default()
    }
}

fn checks(report: &IndexesReport) -> Vec<(&'static str, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.check, f.object.clone()))
        .collect()
}

#[test]
fn unused_needs_no_scans_over_the_window_and_no_constraint() {
    let mut pk = index(1, "t_pkey", &[1]);
    pk.primary = true;
    pk.unique = true;
    pk.constraint = Some("t_pkey".into());
    let cat = catalog(
        vec![pk, index(2, "t_a", &[2]), index(3, "t_b", &[3])],
        &[(1, 0), (2, 0), (3, 5)],
    );
    let report = judge(&cat, &config(), "app");
    assert_eq!(checks(&report), [(UNUSED_INDEX, "public.t_a".to_owned())]);
    assert_eq!(
        report.findings[0].fix.as_deref(),
        Some("DROP INDEX CONCURRENTLY public.t_a;")
    );
    // A window shorter than unused_min_window reports nothing; so does a young index.
    let mut short = cat.clone();
    short.window = 60.0;
    assert!(judge(&short, &config(), "app").unused.is_empty());
    let mut young = cat;
    young.usage[1].age = Some(30.0);
    assert!(judge(&young, &config(), "app").unused.is_empty());
}

#[test]
fn a_stale_last_scan_counts_as_unused_on_16() {
    let mut cat = catalog(vec![index(2, "t_a", &[2])], &[(2, 40)]);
    cat.usage[0].since_last_scan = Some(40.0 * 86_400.0);
    let report = judge(&cat, &config(), "app");
    assert_eq!(report.unused.len(), 1);
    assert!(
        report.findings[0]
            .message
            .contains("last scanned 40.0 days ago")
    );
}

#[test]
fn duplicates_keep_the_constraint_and_prefixes_spare_unique_ones() {
    let mut unique = index(1, "t_a_key", &[1]);
    unique.unique = true;
    unique.constraint = Some("t_a_key".into());
    let dup = index(2, "t_a_idx", &[1]);
    let prefix = index(3, "t_b", &[2]);
    let long = index(4, "t_b_c", &[2, 3]);
    let mut unique_prefix = index(5, "t_d", &[4]);
    unique_prefix.unique = true;
    let long_d = index(6, "t_d_e", &[4, 5]);
    let mut other_opclass = index(7, "t_b_pattern", &[2]);
    other_opclass.opclasses = vec![10_000];
    let cat = catalog(
        vec![
            unique,
            dup,
            prefix,
            long,
            unique_prefix,
            long_d,
            other_opclass,
        ],
        &[],
    );
    let report = judge(&cat, &config(), "app");
    let kinds: Vec<_> = report
        .redundant
        .iter()
        .map(|r| (r.index.as_str(), r.kind, r.kept.as_str()))
        .collect();
    assert!(kinds.contains(&("public.t_a_idx", "duplicate", "public.t_a_key")));
    assert!(kinds.contains(&("public.t_b", "prefix", "public.t_b_c")));
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}

#[test]
fn foreign_keys_need_an_index_leading_with_their_columns_in_any_order() {
    let fk = |name: &str, columns: &[i16]| ForeignKey {
        table_oid: 1,
        table: "public.t".into(),
        name: name.into(),
        references: "public.p".into(),
        columns: columns.to_vec(),
        column_names: columns.iter().map(|c| format!("c{c}")).collect(),
        table_bytes: 1 << 20,
        partitioned: false,
    };
    let fks = [
        fk("covered", &[3, 2]),
        fk("trailing", &[3]),
        fk("none", &[7]),
    ];
    let indexes = [index(1, "t_b_c", &[2, 3])];
    let names: Vec<_> = unindexed_foreign_keys(&indexes, &fks)
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["trailing", "none"]);
    let mut cat = catalog(indexes.to_vec(), &[]);
    cat.foreign_keys = fks.to_vec();
    let report = judge(&cat, &config(), "app");
    let fix = report
        .findings
        .iter()
        .find(|f| f.check == FK_WITHOUT_INDEX)
        .unwrap();
    assert_eq!(
        fix.fix.as_deref(),
        Some("CREATE INDEX CONCURRENTLY ON public.t (c3);")
    );
    // Tables below fk_min_table_bytes are skipped.
    let big = IndexesConfig {
        fk_min_table_bytes: 2 << 20,
        ..config()
    };
    assert!(judge(&cat, &big, "app").unindexed_foreign_keys.is_empty());
}

fn sequence(column_type: &str, sequence_type: &str, last: Option<i64>) -> SequenceDef {
    SequenceDef {
        name: "public.t_id_seq".into(),
        table: Some("public.t".into()),
        column: Some("id".into()),
        column_type: Some(column_type.into()),
        sequence_type: sequence_type.into(),
        start: 1,
        increment: 1,
        max: if sequence_type == "bigint" {
            i64::MAX
        } else {
            i32::MAX.into()
        },
        min: 1,
        cycle: false,
        last_value: last,
        readable: true,
        identity: None,
    }
}

#[test]
fn an_integer_column_fed_by_a_bigint_sequence_ends_at_2_31() {
    let seq = sequence("integer", "bigint", Some(2_000_000_000));
    let usage = sequence_use(&seq);
    assert_eq!(usage.limit, i64::from(i32::MAX));
    assert!(usage.column_type_limits);
    assert!((usage.used_ratio - 2e9 / (f64::from(i32::MAX) - 1.0)).abs() < 1e-9);
    assert_eq!(usage.remaining, f64::from(i32::MAX) - 2e9);
    let mut cat = catalog(vec![], &[]);
    cat.sequences = vec![seq];
    let report = judge(&cat, &config(), "app");
    let f = &report.findings[0];
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .starts_with("ALTER TABLE public.t ALTER COLUMN id TYPE bigint")
    );
    // The same sequence feeding a bigint column has barely started.
    let wide = sequence_use(&sequence("bigint", "bigint", Some(2_000_000_000)));
    assert!(wide.used_ratio < 1e-9 && !wide.column_type_limits);
    // Never used: nothing spent; descending ones count down to their minimum.
    assert_eq!(
        sequence_use(&sequence("integer", "integer", None)).used_ratio,
        0.0
    );
    let mut down = sequence("integer", "bigint", Some(-1_500_000_000));
    (down.start, down.increment, down.min, down.max) = (-1, -1, i64::MIN, -1);
    let down = sequence_use(&down);
    assert_eq!(down.limit, i64::from(i32::MIN));
    assert!(
        down.used_ratio > 0.69 && down.used_ratio < 0.7,
        "{}",
        down.used_ratio
    );
}

#[test]
fn unreadable_sequences_are_counted_with_the_grant() {
    let mut seq = sequence("integer", "integer", None);
    seq.readable = false;
    let mut cat = catalog(vec![], &[]);
    cat.sequences = vec![seq];
    let report = judge(&cat, &config(), "app");
    assert_eq!(report.unreadable_sequences, 1);
    assert_eq!(
        report.findings[0].fix.as_deref(),
        Some("GRANT SELECT ON SEQUENCE public.t_id_seq TO pgvigil;")
    );
}

#[test]
fn series_are_capped_and_what_is_dropped_is_counted() {
    let indexes: Vec<_> = (1..=5)
        .map(|i| index(i, &format!("i{i}"), &[i as i16]))
        .collect();
    let usage: Vec<_> = (1..=5).map(|i| (i, 0)).collect();
    let report = judge(&catalog(indexes, &usage), &config(), "app");
    let snap = crate::collect::indexes::snapshot(&report, "app", 2);
    let text = format!("{snap:?}");
    assert_eq!(report.unused.len(), 5);
    assert_eq!(report.unused[0].index, "public.i5", "largest first");
    assert_eq!(
        snap.get(&crate::metrics::INDEX_UNUSED_BYTES).len(),
        2,
        "{text}"
    );
    let dropped = snap.get(&crate::metrics::INDEX_FINDINGS_DROPPED);
    assert!(
        dropped
            .iter()
            .any(|s| s.labels[1] == "unused_index" && s.value == 3.0),
        "{text}"
    );
    let findings = snap.get(&crate::metrics::INDEX_FINDINGS);
    assert!(
        findings
            .iter()
            .any(|s| s.labels[1] == "unused_index" && s.value == 5.0),
        "{text}"
    );
}

#[test]
fn the_fix_widens_whichever_ends_first() {
    let fix = |seq: SequenceDef| {
        let mut cat = catalog(vec![], &[]);
        cat.sequences = vec![seq];
        judge(&cat, &config(), "app").findings[0]
            .fix
            .clone()
            .unwrap()
    };
    // serial: both are int4, both widen; the rewrite and its safe path are named.
    let serial = fix(sequence("integer", "integer", Some(2_100_000_000)));
    assert!(
        serial.starts_with(
            "ALTER TABLE public.t ALTER COLUMN id TYPE bigint; ALTER SEQUENCE public.t_id_seq AS bigint;"
        ),
        "{serial}"
    );
    assert!(serial.contains("ACCESS EXCLUSIVE") && serial.contains("add a bigint column"));
    // An identity column's sequence follows its column: ALTER TABLE alone.
    let mut identity = sequence("integer", "integer", Some(2_100_000_000));
    identity.identity = Some("a".into());
    let identity = fix(identity);
    assert!(!identity.contains("ALTER SEQUENCE"), "{identity}");
    // Only the sequence is int4: no rewrite.
    let narrow = fix(sequence("bigint", "integer", Some(2_100_000_000)));
    assert!(
        narrow.starts_with("ALTER SEQUENCE public.t_id_seq AS bigint;  -- no table rewrite"),
        "{narrow}"
    );
}
