//! Prepared statements kept per session (`pgvigil::collect::prepared`): the collectors' hot
//! queries are prepared once per session and reused by every later poll, and a statement the
//! server can no longer run as prepared (its result columns changed, the extension under it
//! updated) is prepared again instead of failing.

use std::collections::BTreeSet;

use pgvigil::collect::prepared::Prepared;
use pgvigil::collect::statements::sql::DETECT_SQL;
use pgvigil_testkit::TestCluster;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;

use crate::support::{Poller, connect};

/// The statements the server holds prepared for `client`'s session (read with the simple
/// protocol, which prepares nothing of its own).
async fn server_prepared(client: &tokio_postgres::Client) -> BTreeSet<String> {
    client
        .simple_query("SELECT statement FROM pg_prepared_statements")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_session_prepares_its_collectors_queries_once_and_reuses_them() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("prep_reuse");
    cluster.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let mut poller = Poller::new(&cluster.dsn(&db), |_| {}).await;

    poller.poll().await;
    let kept = poller.prepared.len();
    let after_first = server_prepared(&poller.client).await;
    assert!(
        after_first.contains(DETECT_SQL),
        "the statements collector's detection is kept prepared: {after_first:#?}"
    );
    assert!(
        kept >= 8,
        "the default collectors' queries are kept ({kept})"
    );
    assert!(
        after_first.len() >= kept,
        "the server holds every kept statement: {kept} kept, {} on the server",
        after_first.len()
    );

    for _ in 0..3 {
        poller.poll().await;
    }
    assert_eq!(
        poller.prepared.len(),
        kept,
        "later polls prepare nothing new"
    );
    assert_eq!(
        server_prepared(&poller.client).await,
        after_first,
        "later polls run the same prepared statements"
    );
}

#[tokio::test]
async fn a_statement_whose_result_columns_changed_is_prepared_again() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("prep_stale");
    cluster.psql(&db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1)");
    let client = connect(&cluster.dsn(&db)).await;
    let prepared = Prepared::default();
    let sql = "SELECT * FROM t";

    let rows = prepared.query(&client, sql, &[]).await.unwrap();
    assert_eq!(rows[0].len(), 1);
    // The server now refuses the kept statement ("cached plan must not change result type").
    cluster.psql(&db, "ALTER TABLE t ADD COLUMN b int DEFAULT 2");
    let rows = prepared.query(&client, sql, &[]).await.unwrap();
    assert_eq!(
        rows[0].len(),
        2,
        "the retry ran a statement prepared afresh"
    );
    assert_eq!(rows[0].get::<_, Option<i32>>(1), Some(2));
    assert_eq!(prepared.len(), 1);

    // An error that preparing again cannot mend evicts the statement and is returned.
    cluster.psql(&db, "DROP TABLE t");
    let err = prepared.query(&client, sql, &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err:?}");
    assert!(prepared.is_empty(), "the failed statement is not kept");
    cluster.psql(&db, "CREATE TABLE t (c text); INSERT INTO t VALUES ('x')");
    let rows = prepared.query(&client, sql, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, &str>(0), "x");
}

#[tokio::test]
async fn updating_pg_stat_statements_between_polls_does_not_fail_them() {
    let cluster = TestCluster::start();
    let db = cluster.create_database_without_extensions("prep_extension");
    cluster.psql(&db, "CREATE EXTENSION pg_stat_statements VERSION '1.8'");
    let mut poller = Poller::new(&cluster.dsn(&db), |_| {}).await;
    for _ in 0..2 {
        poller.poll().await;
    }
    // The view gains and renames columns under the statements prepared for 1.8.
    cluster.psql(&db, "ALTER EXTENSION pg_stat_statements UPDATE");
    for _ in 0..2 {
        let observations = poller.poll().await;
        let report = observations
            .statements
            .as_ref()
            .expect("a statements report");
        assert!(report.tracked > 0, "the updated view is read");
    }
    // Dropped and created again: same columns, new objects under the same names.
    cluster.psql(
        &db,
        "DROP EXTENSION pg_stat_statements; CREATE EXTENSION pg_stat_statements",
    );
    let observations = poller.poll().await;
    assert!(observations.statements.is_some());
}
