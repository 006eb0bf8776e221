//! What the four import rules share: labels and the numbers in the annotations.

use crate::alert::{Condition, Evaluation, Matcher};
use crate::collect::Observations;
use crate::collect::imports::reconcile::{ImportVerdict, Verdict};
use crate::collect::imports::{ImportsReport, UnknownImport};

/// `conditions` over the imports report of every watched database; a database without one
/// is unknown (its alerts keep their state), and so is every import of an audit table that
/// could not be read this time ([`ImportsReport::unknown`]), and every import of the database
/// while one of its audit tables has not been read since pgvigil started
/// ([`ImportsReport::unknown_tables`]: after a restart, until a read says); and so is an
/// import whose verdict is still open (`confirming`, `unknown`).
pub(super) fn per_database<'o>(
    observations: &'o Observations,
    mut conditions: impl FnMut(&'o ImportsReport) -> Vec<Condition>,
) -> Evaluation {
    let evaluation = Evaluation::per_database(
        observations,
        |d| d.imports.as_ref(),
        |_, report| conditions(report),
    );
    let unread: Vec<Matcher> = observations
        .each_database()
        .filter_map(|(_, d)| d.imports.as_ref())
        .flat_map(|report| {
            // An audit table not read since pgvigil started: any import alert of the database
            // may be one of its imports.
            let whole = (!report.unknown_tables.is_empty())
                .then(|| vec![("datname".to_owned(), report.datname.clone())]);
            report
                .unknown
                .iter()
                .map(|u| unknown_matcher(report, u))
                .chain(
                    report
                        .imports
                        .iter()
                        .filter_map(|v| open_matcher(report, v)),
                )
                .chain(whole)
        })
        .collect();
    match evaluation {
        _ if unread.is_empty() => evaluation,
        Evaluation::Holds(conditions) => Evaluation::HoldsExcept {
            conditions,
            unknown: unread,
        },
        Evaluation::HoldsExcept {
            conditions,
            mut unknown,
        } => {
            unknown.extend(unread);
            Evaluation::HoldsExcept {
                conditions,
                unknown,
            }
        }
        Evaluation::Unknown => Evaluation::Unknown,
    }
}

/// The labels of the alerts of an import whose audit table was not read (see [`condition`]).
fn unknown_matcher(report: &ImportsReport, u: &UnknownImport) -> Matcher {
    vec![
        ("datname".to_owned(), report.datname.clone()),
        ("table".to_owned(), u.table.clone()),
        ("import_id".to_owned(), u.import_id.clone()),
    ]
}

/// The labels of the alerts of an import whose verdict is open: a discrepancy being confirmed
/// (the first look after a pgvigil restart, whose memory of the confirmed verdict is gone) or
/// a count that failed. Neither says the import is fine, so an alert of it keeps its state.
fn open_matcher(report: &ImportsReport, v: &ImportVerdict) -> Option<Matcher> {
    matches!(v.verdict, Verdict::Confirming | Verdict::Unknown).then(|| {
        vec![
            ("datname".to_owned(), report.datname.clone()),
            (
                "table".to_owned(),
                v.target_table.clone().unwrap_or_default(),
            ),
            ("import_id".to_owned(), v.import_id.clone()),
        ]
    })
}

/// The verdicts of one kind.
pub(super) fn with_verdict<'a>(
    report: &'a ImportsReport,
    verdicts: &'a [Verdict],
) -> impl Iterator<Item = &'a ImportVerdict> + 'a {
    report
        .imports
        .iter()
        .filter(move |v| verdicts.contains(&v.verdict))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Rows missing: the shortfall when there is one, 0 when the import was counted and nothing is
/// missing, "unknown" when it was not counted (a running or aborted import) — never a 0 that
/// contradicts "none of its rows are committed".
fn missing(v: &ImportVerdict) -> String {
    match (v.missing_rows, v.committed_rows) {
        (Some(missing), _) => missing.to_string(),
        (None, Some(_)) => "0".to_owned(),
        (None, None) => "unknown".to_owned(),
    }
}

/// A condition for one import: labels `datname`, `table`, `import_id`; every number as an
/// annotation.
pub(super) fn condition(
    report: &ImportsReport,
    v: &ImportVerdict,
    summary: String,
    description: String,
) -> Condition {
    let table = v.target_table.clone().unwrap_or_default();
    let mut c = Condition::new(summary, description)
        .label("datname", report.datname.clone())
        .label("table", table.clone())
        .label("import_id", v.import_id.clone())
        .annotation("import_id", &v.import_id)
        .annotation("audit_table", &v.audit_table)
        .annotation("table", table)
        .annotation("source", opt(v.source_name.clone()))
        .annotation("status", &v.status)
        .annotation("verdict", v.verdict.as_str())
        .annotation("expected", opt(v.expected_rows))
        .annotation("rejected", opt(v.rejected_rows))
        .annotation("skipped", opt(v.skipped_rows))
        .annotation("committed", opt(v.committed_rows))
        .annotation("missing", missing(v))
        .annotation("reported", opt(v.reported_rows));
    if let Some(ratio) = v.committed_ratio() {
        c = c.annotation("ratio", format!("{ratio:.4}"));
    }
    if let Some(xid) = v.xact_id {
        c = c.annotation("xact_id", xid);
    }
    if let Some(status) = v.xact_status {
        c = c.annotation("xact_status", status.as_str());
    }
    if let Some(reason) = &v.reason {
        c = c.annotation("reason", reason);
    }
    if let Some(sql) = &v.confirm_sql {
        c = c.annotation("sql", sql);
    }
    c
}

/// `import 1b4e… of contacts.csv into public.contacts`.
pub(super) fn describe(v: &ImportVerdict) -> String {
    format!(
        "import {} of {} into {}",
        v.import_id,
        v.source_name.as_deref().unwrap_or("(no source)"),
        v.target_table.as_deref().unwrap_or("(unknown table)")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_unknown_unless_the_import_was_counted() {
        let mut v = ImportVerdict::invalid("import_audit", "id", "running", "x".into());
        assert_eq!(missing(&v), "unknown");
        v.committed_rows = Some(120);
        assert_eq!(missing(&v), "0");
        v.missing_rows = Some(80);
        assert_eq!(missing(&v), "80");
    }
}
