//! Property tests of the audit-row interpretation: any combination of NULLs, negatives, huge
//! numbers, unknown statuses, and names with quotes, semicolons and Unicode gives a verdict or
//! `invalid` with a reason, never a panic, and every name reaches SQL quoted.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::audit::{RawRow, confirm_sql, select_sql};
use super::reconcile::{Facts, Policy, Reconciler, Verdict, XactStatus};
use crate::config::{AuditColumns, AuditTableConfig, Ident, QualifiedName};

fn number_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => (0i64..100_000).prop_map(|n| Some(n.to_string())),
        1 => any::<i64>().prop_map(|n| Some(n.to_string())),
        1 => Just(Some(i64::MAX.to_string())),
        1 => Just(Some("9223372036854775808".to_owned())),
        1 => Just(Some("-1".to_owned())),
        1 => Just(Some(" 12 ".to_owned())),
        1 => Just(None),
        1 => ".{0,10}".prop_map(Some),
    ]
}

fn name_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(Some("public.contacts".to_owned())),
        1 => Just(Some("\"Weird\"\"; DROP TABLE x; --".to_owned())),
        1 => Just(Some("tâble;😀".to_owned())),
        1 => Just(Some(String::new())),
        1 => Just(None),
        1 => any::<String>().prop_map(Some),
    ]
}

fn status_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => proptest::sample::select(&["pending", "running", "committed", "failed", "cancelled"][..])
            .prop_map(|s| Some(s.to_owned())),
        1 => Just(Some("COMMITTED".to_owned())),
        1 => Just(None),
        1 => ".{0,10}".prop_map(Some),
    ]
}

fn age() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        3 => (0.0f64..100_000.0).prop_map(Some),
        1 => Just(None),
        1 => Just(Some(-5.0)),
        1 => Just(Some(f64::NAN)),
        1 => Just(Some(f64::INFINITY)),
        1 => Just(Some(f64::MAX)),
    ]
}

fn raw_row() -> BoxedStrategy<RawRow> {
    let names = (
        name_text(),
        name_text(),
        name_text(),
        name_text(),
        name_text(),
    )
        .boxed();
    let numbers = (
        number_text(),
        number_text(),
        number_text(),
        number_text(),
        number_text(),
    )
        .boxed();
    let rest = (status_text(), age(), age(), age()).boxed();
    (names, numbers, rest)
        .prop_map(|(n, c, r)| RawRow {
            import_id: n.0,
            target_table: n.1,
            id_column: n.2,
            source_name: n.3,
            error_message: n.4,
            expected_rows: c.0,
            rejected_rows: c.1,
            skipped_rows: c.2,
            reported_rows: c.3,
            xact_id: c.4,
            status: r.0,
            age_seconds: r.1,
            heartbeat_age_seconds: r.2,
            finished_age_seconds: r.3,
        })
        .boxed()
}

fn facts() -> impl Strategy<Value = Facts> {
    (
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(Some),
            (0i64..100_000).prop_map(Some)
        ],
        prop_oneof![
            Just(None),
            Just(Some(XactStatus::Committed)),
            Just(Some(XactStatus::Aborted)),
            Just(Some(XactStatus::InProgress)),
        ],
    )
        .prop_map(|(committed_rows, xact_status)| Facts {
            committed_rows,
            xact_status,
            ..Facts::default()
        })
}

/// Whether `sql` holds `name` only as a properly quoted identifier.
fn quoted_in(sql: &str, name: &str) -> bool {
    sql.contains(&format!("\"{}\"", name.replace('"', "\"\"")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_audit_row_gets_a_verdict_or_invalid_with_a_reason(
        row in raw_row(),
        polls in proptest::collection::vec((facts(), 0u64..200), 1..5),
    ) {
        let (id, status) = row.id_and_status();
        prop_assert!(!id.is_empty() && !status.is_empty());
        match row.validate("import_audit", "public.contacts".into()) {
            Err(reason) => prop_assert!(!reason.is_empty()),
            Ok(record) => {
                // What validation guarantees, whatever the text said.
                prop_assert!(record.expected_rows >= 0 && record.rejected_rows >= 0 && record.skipped_rows >= 0);
                prop_assert!(i128::from(record.rejected_rows) + i128::from(record.skipped_rows) <= i128::from(record.expected_rows));
                prop_assert!(record.expected_net() >= 0);
                prop_assert!(record.age_seconds >= 0.0 || record.age_seconds.is_nan());
                let mut reconciler = Reconciler::new(Policy {
                    grace_period: Duration::from_secs(10),
                    recheck_interval: Duration::from_secs(60),
                    stall_after: Duration::from_secs(300),
                    max_duration: Duration::from_secs(3600),
                });
                let t0 = Instant::now();
                for (facts, after) in polls {
                    let now = t0 + Duration::from_secs(after);
                    let _ = reconciler.needs_count(&record, now);
                    let verdict = reconciler.judge(&record, facts, now);
                    if let Some(missing) = verdict.missing_rows {
                        prop_assert!(missing > 0, "{verdict:?}");
                    }
                    if verdict.verdict == Verdict::Shortfall {
                        prop_assert!(verdict.missing_rows.is_some());
                    }
                    if let Some(ratio) = verdict.committed_ratio() {
                        prop_assert!(!ratio.is_nan());
                    }
                    let sql = confirm_sql(&record.target_table, &record.id_column, &record.import_id);
                    prop_assert!(quoted_in(&sql, &record.id_column), "{sql}");
                    prop_assert!(sql.contains(&format!("'{}'", record.import_id.replace('\'', "''"))), "{sql}");
                }
            }
        }
    }

    #[test]
    fn configured_names_reach_sql_quoted(
        schema in "[^\u{0}-\u{1f}\u{7f}]{1,20}",
        table in "[^\u{0}-\u{1f}\u{7f}]{1,20}",
        column in "[^\u{0}-\u{1f}\u{7f}]{1,20}",
    ) {
        let (Ok(schema_ident), Ok(table_ident), Ok(column_ident)) =
            (Ident::new(&schema), Ident::new(&table), Ident::new(&column))
        else {
            return Ok(());
        };
        let config = AuditTableConfig {
            table: QualifiedName { schema: Some(schema_ident), name: table_ident },
            columns: AuditColumns { import_id: column_ident, ..AuditColumns::default() },
        };
        let sql = select_sql(&config);
        prop_assert!(quoted_in(&sql, &schema) && quoted_in(&sql, &table) && quoted_in(&sql, &column), "{sql}");
        // Nothing a name holds ends the statement: outside quoted identifiers and literals the
        // SQL has no semicolon.
        let mut outside = String::new();
        let (mut in_ident, mut in_literal) = (false, false);
        for c in sql.chars() {
            match c {
                '"' if !in_literal => in_ident = !in_ident,
                '\'' if !in_ident => in_literal = !in_literal,
                c if !in_ident && !in_literal => outside.push(c),
                _ => {}
            }
        }
        prop_assert!(!outside.contains(';'), "{sql}");
    }
}
