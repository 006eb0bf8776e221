//! Shared helpers: the cluster, connections, and reading metrics back from a registry.

use std::sync::OnceLock;

use pgvigil_testkit::TestCluster;
use tokio_postgres::{Client, NoTls};

/// The cluster shared by every test of this binary.
pub(crate) fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(TestCluster::start)
}

/// A fresh database for one test.
pub(crate) fn database(prefix: &str) -> String {
    cluster().create_database(prefix)
}

/// A plain tokio-postgres connection to `db`, with its connection task spawned.
pub(crate) async fn connect(db: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&cluster().dsn(db), NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test connection ended: {e}");
        }
    });
    client
}

/// The registry in Prometheus/OpenMetrics text.
pub(crate) fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode registry");
    text
}

/// The value of the sample `name` whose labels include every `(key, value)` of `labels`.
/// Panics if several samples match (the test would be ambiguous).
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_part, value_part) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")))
        {
            let value: f64 = value_part
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("unparsable sample {line:?}"));
            assert!(
                found.is_none(),
                "several samples match {name} {labels:?}:\n{text}"
            );
            found = Some(value);
        }
    }
    found
}

/// Distinct values of label `key` across the samples of `name`.
pub(crate) fn label_values(
    text: &str,
    name: &str,
    key: &str,
) -> std::collections::BTreeSet<String> {
    let needle = format!("{key}=\"");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let start = l.find(&needle)? + needle.len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_owned())
        })
        .collect()
}
