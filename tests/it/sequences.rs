//! `SequenceExhaustion` end to end against real PostgreSQL: a `serial` (int4) column whose
//! sequence is moved close to 2^31 - 1 fires a warning past `sequence_warning_ratio` and
//! escalates to critical past `sequence_critical_ratio`; an int4 column fed by a bigint
//! sequence fires too (the column ends first, and the fix widens only the column), and so does
//! an identity column (whose sequence follows the column's type). All resolve once the fix
//! they name is applied. The indexes collector runs every
//! second; every step waits on the alert in `/api/v1/alerts`.

use pgvigil_testkit::TestCluster;
use serde_json::Value;

use crate::support::{CEILING, Daemon, one_target};
use crate::support_alerting::{api_active, api_alerts, has_labels, wait_async};

const SETTINGS: &str = "[targets.indexes]\ninterval = \"1s\"\nsequence_warning_ratio = 0.5\nsequence_critical_ratio = 0.9\n";

/// Wait until the firing SequenceExhaustion alert of `sequence` has `severity`.
async fn firing(daemon: &Daemon, sequence: &str, severity: &str) -> Value {
    let labels = [
        ("alertname", "SequenceExhaustion"),
        ("sequence", sequence),
        ("severity", severity),
    ];
    let what = format!("a firing {severity} SequenceExhaustion for {sequence}");
    wait_async(&what, CEILING, || api_active(daemon, "firing", &labels)).await
}

/// Wait until no SequenceExhaustion alert of `sequence` is active and one is resolved.
async fn resolved(daemon: &Daemon, sequence: &str) {
    let labels = [("alertname", "SequenceExhaustion"), ("sequence", sequence)];
    let what = format!("SequenceExhaustion for {sequence} resolved");
    wait_async(&what, CEILING, || async {
        let view = api_alerts(daemon).await;
        let listed = |state: &str| {
            view[state]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| has_labels(a, &labels))
        };
        (!listed("active") && listed("resolved")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serial_running_out_warns_then_is_critical_and_resolves_once_bigint() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("sequences");
    // 60% of 2^31 - 1 for the serial: past the warning ratio 0.5, not the critical 0.9.
    cluster.psql(
        &db,
        "CREATE TABLE orders (id serial PRIMARY KEY, note text);
         SELECT setval('orders_id_seq', 1288490188);
         CREATE SEQUENCE wide_seq AS bigint;
         CREATE TABLE narrow (id int NOT NULL DEFAULT nextval('wide_seq'));
         SELECT setval('wide_seq', 2000000000);
         CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY);
         SELECT setval('ident_id_seq', 2000000000);
         CREATE TABLE fine (id serial);",
    );
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), SETTINGS)).await;

    let warning = firing(&daemon, "public.orders_id_seq", "warning").await;
    assert_eq!(warning["labels"]["datname"], db.as_str());
    assert_eq!(warning["labels"]["column"], "public.orders.id");
    let a = &warning["annotations"];
    assert_eq!(a["column_type"], "integer", "{a}");
    assert_eq!(a["sequence_type"], "integer", "{a}");
    assert_eq!(a["used_ratio"], "0.6000", "{a}");
    assert_eq!(
        a["remaining"],
        (i32::MAX - 1_288_490_188).to_string(),
        "{a}"
    );
    assert_eq!(a["ends_first"], "sequence", "{a}");
    let fix = a["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(
            "ALTER TABLE public.orders ALTER COLUMN id TYPE bigint; ALTER SEQUENCE public.orders_id_seq AS bigint;"
        ),
        "{fix}"
    );
    assert!(fix.contains("ACCESS EXCLUSIVE"), "{fix}");
    assert!(
        a["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("SequenceExhaustion.md")
    );

    // The int4 column fed by a bigint sequence: critical, the column ends first.
    let narrow = firing(&daemon, "public.wide_seq", "critical").await;
    let a = &narrow["annotations"];
    assert_eq!(narrow["labels"]["column"], "public.narrow.id");
    assert_eq!(a["ends_first"], "column type", "{a}");
    assert_eq!(a["limit"], i32::MAX.to_string(), "{a}");
    let fix = a["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("ALTER TABLE public.narrow ALTER COLUMN id TYPE bigint;")
            && !fix.contains("ALTER SEQUENCE"),
        "{fix}"
    );

    // An identity column's sequence follows its column's type: ALTER TABLE alone.
    let ident = firing(&daemon, "public.ident_id_seq", "critical").await;
    let fix = ident["annotations"]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("ALTER TABLE public.ident ALTER COLUMN id TYPE bigint;")
            && !fix.contains("ALTER SEQUENCE"),
        "{fix}"
    );

    // Past the critical ratio: the serial's alert escalates.
    cluster.psql(&db, "SELECT setval('orders_id_seq', 2000000000)");
    let critical = firing(&daemon, "public.orders_id_seq", "critical").await;
    assert_eq!(critical["annotations"]["used_ratio"], "0.9313");

    // The fix the alert gives: both resolve, and the healthy serial never fired.
    cluster.psql(
        &db,
        "ALTER TABLE orders ALTER COLUMN id TYPE bigint;
         ALTER SEQUENCE orders_id_seq AS bigint;
         ALTER TABLE narrow ALTER COLUMN id TYPE bigint;
         ALTER TABLE ident ALTER COLUMN id TYPE bigint;",
    );
    resolved(&daemon, "public.orders_id_seq").await;
    resolved(&daemon, "public.wide_seq").await;
    resolved(&daemon, "public.ident_id_seq").await;
    let view = api_alerts(&daemon).await;
    let all = [
        view["active"].as_array().unwrap(),
        view["resolved"].as_array().unwrap(),
    ];
    assert!(
        !all.iter()
            .flat_map(|v| v.iter())
            .any(|a| has_labels(a, &[("sequence", "public.fine_id_seq")])),
        "{view}"
    );
    daemon.stop().await;
}
