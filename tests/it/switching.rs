//! `docs/switching.md`, the guide for postgres_exporter and pgMonitor users: every pgvigil
//! metric and rule it names exists, every row either maps or says why not, and every metric of
//! postgres_exporter's example `queries.yaml` (Debian's package, a test dependency) has a row.

use std::collections::BTreeSet;

const GUIDE: &str = "docs/switching.md";
const PE_QUERIES: &str = "/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml";

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A table of the guide: its header cells and its rows' cells.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn cells(line: &str) -> Vec<String> {
    // `\|` inside a cell is a pipe of the text, not a column border.
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.replace("\\|", "\u{0}")
        .split('|')
        .map(|c| c.trim().replace('\u{0}', "|"))
        .collect()
}

fn tables(text: &str) -> Vec<Table> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        if lines[i].starts_with('|') && lines[i + 1].starts_with("|---") {
            let header = cells(lines[i]);
            let mut rows = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                rows.push(cells(lines[i]));
                i += 1;
            }
            out.push(Table { header, rows });
        } else {
            i += 1;
        }
    }
    out
}

/// The backticked words of a cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Every `pgvigil_...` metric name in a text (PromQL expressions included).
fn pgvigil_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("pgvigil_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_pgvigil_name_in_the_switching_guide_exists() {
    let text = std::fs::read_to_string(repo(GUIDE)).unwrap();
    let tables = tables(&text);
    let metric_tables = tables
        .iter()
        .filter(|t| t.header.get(1).map(String::as_str) == Some("pgvigil"))
        .count();
    let rule_tables = tables
        .iter()
        .filter(|t| t.header.get(1).map(String::as_str) == Some("pgvigil rule"))
        .count();
    assert_eq!(
        (metric_tables, rule_tables),
        (2, 2),
        "a metrics and an alerts table for each of postgres_exporter and pgMonitor"
    );
    let mut problems = Vec::new();
    let mut mapped = 0;
    for table in &tables {
        let rules = match table.header.get(1).map(String::as_str) {
            Some("pgvigil") => false,
            Some("pgvigil rule") => true,
            _ => continue,
        };
        for row in &table.rows {
            let [peer, ours, notes] = &row[..] else {
                problems.push(format!("row without three cells: {row:?}"));
                continue;
            };
            // Every pgvigil metric named anywhere in the row exists.
            for name in pgvigil_names(&row.join(" ")) {
                if pgvigil::metrics::find(&name).is_none() {
                    problems.push(format!("{peer}: {name} is not a pgvigil metric"));
                }
            }
            if ours == "none" {
                if notes.len() < 10 {
                    problems.push(format!("{peer}: no pgvigil equivalent, and no reason why"));
                }
                continue;
            }
            mapped += 1;
            if rules {
                for rule in quoted(ours) {
                    if pgvigil::alert::rules::find(rule).is_none() {
                        problems.push(format!("{peer}: {rule} is not a pgvigil rule"));
                    }
                }
                if quoted(ours).is_empty() {
                    problems.push(format!("{peer}: the rule column names no rule: {ours}"));
                }
            } else if pgvigil_names(ours).is_empty() {
                problems.push(format!(
                    "{peer}: the pgvigil column names no metric: {ours}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{GUIDE}:\n{}", problems.join("\n"));
    assert!(mapped > 100, "only {mapped} rows map to pgvigil");
}

#[test]
fn every_metric_of_the_postgres_exporter_queries_file_has_a_row() {
    let queries = std::fs::read_to_string(PE_QUERIES).unwrap_or_else(|e| {
        panic!(
            "{PE_QUERIES}: {e} (scripts/install-test-deps.sh installs prometheus-postgres-exporter)"
        )
    });
    // `namespace:` at the start of a line, then `- column:` entries whose next line is the
    // usage; LABEL columns are labels, the others metrics named namespace_column.
    let lines: Vec<&str> = queries.lines().collect();
    let mut expected = BTreeSet::new();
    let mut namespace = None;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with([' ', '#']) && line.trim_end().ends_with(':') {
            namespace = Some(line.trim_end().trim_end_matches(':'));
            continue;
        }
        let Some(column) = line
            .trim()
            .strip_prefix("- ")
            .and_then(|c| c.strip_suffix(':'))
        else {
            continue;
        };
        let usage = lines.get(i + 1).copied().unwrap_or_default();
        if let Some(ns) = namespace
            && usage.contains("usage:")
            && !usage.contains("LABEL")
        {
            expected.insert(format!("{ns}_{column}"));
        }
    }
    assert!(expected.len() > 40, "parsed only {expected:?}");
    let text = std::fs::read_to_string(repo(GUIDE)).unwrap();
    let tables = tables(&text);
    let listed: BTreeSet<&str> = tables
        .iter()
        .filter(|t| t.header.first().map(String::as_str) == Some("postgres_exporter"))
        .flat_map(|t| t.rows.iter().flat_map(|r| quoted(&r[0])))
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "{GUIDE} has no row for {missing:?}");
}

#[test]
fn the_parser_sees_names_and_escaped_pipes() {
    assert_eq!(
        pgvigil_names("rate(pgvigil_a_total[5m]) / x_pgvigil_b + pgvigil_c{x=\"1\"}"),
        ["pgvigil_a_total", "pgvigil_c"]
    );
    assert_eq!(cells("| `a` | b \\| c | d |"), ["`a`", "b | c", "d"]);
}
