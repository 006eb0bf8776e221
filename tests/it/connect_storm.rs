//! A connect storm (issue #15): many sources whose server accepts connections and never
//! answers, in one daemon with `[server] max_concurrent_connects = 2`. Asserted from the
//! listener's side: never more than two of pgvigil's connections are open on it at once, every
//! stalled source still gets its turn again and again (the line moves), and a real PostgreSQL
//! target in the same daemon comes up and stays up without a single failed attempt: its
//! attempts wait in line before their connect_timeout starts, so the wait does not make it
//! time out, and the line is first come, first served, so it is not starved.

use std::cell::Cell;
use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, one_target};
use crate::support_faults::StallingListener;

const WAIT: Duration = Duration::from_secs(60);
const STALLED: usize = 6;

#[tokio::test]
async fn connection_attempts_wait_in_line_for_a_permit_and_a_real_target_is_not_starved() {
    let silent = StallingListener::start().await;
    let cluster = TestCluster::start();
    let mut config = String::from("[server]\nmax_concurrent_connects = 2\n");
    for i in 0..STALLED {
        config += &one_target(
            &format!("stalled{i}"),
            &silent.dsn(),
            "connect_timeout = \"1s\"\n",
        );
    }
    // Its wait in line (up to 6 / 2 × 1 s) is longer than its own connect_timeout: if the
    // wait counted against it, it would time out.
    config += &one_target(
        "real",
        &cluster.dsn("postgres"),
        "connect_timeout = \"2s\"\n",
    );
    let daemon = Daemon::start(&config).await;

    let queued = Cell::new(0.0f64);
    let failures = |m: &crate::support::Metrics, target: &str, purpose: &str| {
        m.value(
            "pgvigil_connection_attempts_total",
            &[
                ("target", target),
                ("purpose", purpose),
                ("result", "failure"),
            ],
        )
        .unwrap_or(0.0)
    };
    let m = daemon
        .wait_for(
            "real up, every stalled source tried 3 times, a line seen",
            WAIT,
            |m| {
                queued.set(
                    queued
                        .get()
                        .max(m.value("pgvigil_connect_attempts_waiting", &[])?),
                );
                let all_tried =
                    (0..STALLED).all(|i| failures(m, &format!("stalled{i}"), "main") >= 3.0);
                (m.value("pgvigil_up", &[("target", "real")])? == 1.0
                    && all_tried
                    && queued.get() >= 1.0
                    && silent.peak_open() >= 2)
                    .then(|| m.clone())
            },
        )
        .await;

    // The limit, seen from the server's side: 6 sources, never more than 2 connections.
    assert_eq!(
        silent.peak_open(),
        2,
        "open at once on the stalled listener"
    );
    assert!(silent.accepted() >= 3 * STALLED, "{}", silent.accepted());
    // The real target waited its turn without failing once, main or database sessions.
    assert_eq!(failures(&m, "real", "main"), 0.0);
    assert_eq!(failures(&m, "real", "database"), 0.0);
    let waited = m
        .value("pgvigil_connect_permit_wait_seconds_count", &[])
        .unwrap();
    assert!(waited >= (3 * STALLED) as f64, "{waited}");
    assert!(
        m.value("pgvigil_connect_permit_wait_seconds_sum", &[])
            .unwrap()
            > 0.0,
        "attempts waited"
    );
    let in_progress = m
        .value("pgvigil_connect_attempts_in_progress", &[])
        .unwrap();
    assert!(in_progress <= 2.0, "{in_progress}");
    // The stalled sources are down for their own timeout, not for the line.
    let target = daemon
        .wait_for_target("stalled0", "the timeout in the API", WAIT, |t| {
            t["last_error"].as_str().map(|_| t.clone())
        })
        .await;
    let error = target["last_error"].as_str().unwrap();
    assert!(
        error.contains("no session within connect_timeout (1s)"),
        "{error}"
    );
    // And the real one stays up while the storm goes on.
    let before = silent.accepted();
    daemon
        .wait_for("more stalled attempts, real still up", WAIT, |m| {
            (silent.accepted() >= before + STALLED
                && m.value("pgvigil_up", &[("target", "real")])? == 1.0
                && failures(m, "real", "main") == 0.0)
                .then_some(())
        })
        .await;
    assert_eq!(silent.peak_open(), 2);
    daemon.stop().await;
}
