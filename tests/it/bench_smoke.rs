//! `bench/side-by-side.sh --smoke`: the side-by-side benchmark still runs end to end at tiny
//! sizes (a scratch cluster, postgres_exporter and two pgvigils scraped in turns, the fleet
//! case, one target over every database) and writes every table, so the full run (not in CI)
//! cannot rot. Nothing here asserts a speed: the figures are checked to exist and to be
//! consistent, never against a threshold.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::pgvigil_bin;

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn side_by_side_smoke_writes_every_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(root.join("bench/side-by-side.sh"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .arg("--pgvigil")
        .arg(pgvigil_bin())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "bench/side-by-side.sh --smoke failed ({}):\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for heading in [
        "## Side by side with postgres_exporter, and the fleet case",
        "### The database side: lower bound",
        "### Fleet: one daemon, many targets, default collectors",
        "### Every database: one target, 3 databases",
        "### Against the targets of issue 15",
        "| series per scrape |",
        "| process CPU per cycle (poll + one scrape) |",
    ] {
        assert!(
            report.contains(heading),
            "report.md lacks {heading:?}:\n{report}"
        );
    }

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let phases = results["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{results}");
    for phase in phases {
        let heading = format!("### {} tables,", number(phase, "tables"));
        assert!(
            report.contains(&heading),
            "report.md lacks {heading:?}:\n{report}"
        );
        let subjects = phase["subjects"].as_object().unwrap();
        for name in ["exporter", "pgvigil-default", "pgvigil-full"] {
            let s = &subjects[name];
            assert!(number(s, "series") > 0.0, "{name}: {s}");
            assert!(number(s, "scrapes") >= 2.0, "{name}: {s}");
            assert!(number(s, "backend_sessions") >= 1.0, "{name}: {s}");
            assert!(number(s, "rss") > 0.0 && number(s, "hwm") >= number(s, "rss"));
            if name != "exporter" {
                assert!(number(s, "polls") >= 1.0, "{name} was never polled: {s}");
                // What Prometheus is served is OpenMetrics; the classic body counts the series.
                assert!(number(s, "plain_bytes") > 0.0);
            }
        }
        // Full fidelity exports at least every table the default does.
        assert!(
            number(&subjects["pgvigil-full"], "series")
                >= number(&subjects["pgvigil-default"], "series")
        );
        for (name, bound) in phase["lower_bound"].as_object().unwrap() {
            assert!(number(bound, "wall_median") > 0.0, "{name}: {bound}");
        }
    }
    let fleet = results["fleet"].as_array().unwrap();
    assert_eq!(
        fleet
            .iter()
            .map(|f| number(f, "targets"))
            .collect::<Vec<_>>(),
        [1.0, 3.0]
    );
    for size in fleet {
        // The script waits until every target has polled twice, so each has a last success.
        assert!(number(size, "max_staleness").is_finite(), "{size}");
        assert!(number(size, "polls") >= 1.0, "{size}");
        assert!(number(size, "metrics_series") > 0.0, "{size}");
        // Every target's main and database sessions went through the connect line.
        assert!(
            number(size, "connect_permit_waits") >= number(size, "targets"),
            "{size}"
        );
        assert!(number(size, "connect_timeouts") >= 0.0, "{size}");
    }
    // Written whole at the end; after each size it is already there, marked partial.
    assert_eq!(results["partial"], false);
    assert_eq!(results["fleet_failed"], serde_json::json!([]));
    // The every-database case: every database visited on the 2-connection budget, and the short
    // import alerted (the script waited for the alert; here its figures must be there).
    let wide = &results["wide"];
    assert_eq!(number(wide, "databases"), 3.0, "{wide}");
    assert!(number(wide, "first_round_seconds") > 0.0, "{wide}");
    let sessions = number(wide, "max_sessions");
    assert!((1.0..=2.0).contains(&sessions), "{wide}");
    let latency = &wide["alert_latency"]["xact_id and NOTIFY"];
    assert_eq!(number(latency, "runs"), 1.0, "{wide}");
    assert!(number(latency, "max") > 0.0, "{wide}");
}
