//! Replication, slots and the archiver against real servers: a streaming standby of the
//! testkit (paused, resumed, idle, stopped), a physical slot nobody consumes, and an
//! `archive_command` that fails. The standby tests run on 15 and 18.

use std::time::{Duration, Instant};

use pgvigil_testkit::TestCluster;
use serde_json::Value;

use crate::support::{Daemon, Metrics, one_target};
use crate::support_alerting::{api_active, wait_async};

const WAIT: Duration = crate::support::CEILING;
/// WAL written while replay is paused; `max_lag_bytes` in the test config is below it.
const PAUSED_WAL: u64 = 4 << 20;
/// The idle period of the phantom-lag check (postgres_exporter#385 grows by it).
const IDLE: Duration = Duration::from_secs(60);

macro_rules! standby_tests {
    ($($name:ident: $major:literal,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                a_streaming_standby_seen_from_both_sides($major).await;
            }
        )*
    };
}

standby_tests! {
    standby_lag_pause_resume_idle_and_stop_on_15: 15,
    standby_lag_pause_resume_idle_and_stop_on_18: 18,
}

/// Both servers as targets, polling fast, with the lag thresholds lowered.
fn config(primary: &TestCluster, standby: &TestCluster) -> String {
    let target = |name: &str, dsn: String| {
        format!(
            "[[targets]]\nname = \"{name}\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\n\
             reconnect_max_backoff = \"1s\"\n\
             [targets.alerts.ReplicationLagHigh]\nfor = \"0s\"\nmax_lag_bytes = 1048576\n\
             critical_lag_bytes = 1073741824\nmax_lag = \"1h\"\ncritical_lag = \"2h\"\n\
             [targets.alerts.StandbyNotStreaming]\nfor = \"0s\"\n"
        )
    };
    format!(
        "{}{}",
        target("primary", primary.dsn("postgres")),
        target("standby", standby.dsn("postgres"))
    )
}

fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.value(name, labels)
}

/// A primary, its standby and a daemon watching both.
struct Pair {
    primary: TestCluster,
    standby: TestCluster,
    daemon: Daemon,
    /// The standby's application_name.
    name: String,
}

/// The standby target's labels.
const ME: [(&str, &str); 1] = [("target", "standby")];

impl Pair {
    /// The primary's labels for the standby's lag at `stage`.
    fn stage<'a>(&'a self, stage: &'a str) -> [(&'a str, &'a str); 3] {
        [
            ("target", "primary"),
            ("application_name", self.name.as_str()),
            ("stage", stage),
        ]
    }

    /// The primary's labels for the standby.
    fn on_primary(&self) -> [(&str, &str); 2] {
        [
            ("target", "primary"),
            ("application_name", self.name.as_str()),
        ]
    }

    /// An alert of this pair firing with these labels.
    async fn firing(&self, alertname: &str, labels: &[(&str, &str)]) -> Option<Value> {
        let mut all = vec![("alertname", alertname)];
        all.extend_from_slice(labels);
        api_active(&self.daemon, "firing", &all).await
    }
}

async fn a_streaming_standby_seen_from_both_sides(major: u32) {
    // Without autovacuum: its ANALYZE of the rows written while replay was paused commits on
    // the primary at a time of its own, which can fall inside the idle minute below and reset
    // the naive lag that minute shows growing (seen under load).
    let primary = TestCluster::builder()
        .version(major)
        .setting("autovacuum", "off")
        .start();
    let standby = primary.start_standby();
    let name = standby.standby_name().unwrap().to_owned();
    let daemon = Daemon::start(&config(&primary, &standby)).await;
    let pair = Pair {
        primary,
        standby,
        daemon,
        name,
    };
    streaming_and_caught_up(&pair).await;
    lag_while_replay_is_paused(&pair).await;
    lag_back_to_zero_after_resume(&pair).await;
    idle_without_phantom_lag(&pair).await;
    stopped_standby_alerts_on_the_primary(&pair).await;
    standby_cut_off_from_its_primary(&pair).await;
    pair.daemon.stop().await;
}

/// Both sides see the standby streaming and caught up.
async fn streaming_and_caught_up(pair: &Pair) {
    let m = pair
        .daemon
        .wait_for("both sides streaming and caught up", WAIT, |m| {
            let primary_ok = value(
                m,
                "pgvigil_replication_standby_streaming",
                &pair.on_primary(),
            ) == Some(1.0)
                && value(m, "pgvigil_replication_lag_bytes", &pair.stage("replay")) == Some(0.0);
            let standby_ok = value(m, "pgvigil_standby_wal_receiver_streaming", &ME) == Some(1.0)
                && value(m, "pgvigil_standby_replay_lag_seconds", &ME) == Some(0.0)
                && value(m, "pgvigil_standby_replay_lsn_bytes", &ME).is_some_and(|v| v > 0.0)
                && value(m, "pgvigil_standby_receive_lsn_bytes", &ME).is_some()
                && value(m, "pgvigil_server_in_recovery", &ME) == Some(1.0);
            (primary_ok && standby_ok).then(|| m.clone())
        })
        .await;
    let primary = [("target", "primary")];
    assert_eq!(
        value(&m, "pgvigil_replication_standbys", &primary),
        Some(1.0)
    );
    assert_eq!(value(&m, "pgvigil_standby_replay_paused", &ME), Some(0.0));
    // The standby is no primary: it reports no standbys of its own and its receiver's info.
    assert_eq!(value(&m, "pgvigil_replication_standbys", &ME), Some(0.0));
    assert!(
        m.matching("pgvigil_standby_wal_receiver_info", &ME)
            .any(|(l, _)| l["status"] == "streaming"),
        "{}",
        m.text
    );
    assert!(value(&m, "pgvigil_standby_replay_lsn_bytes", &primary).is_none());
    assert_eq!(value(&m, "pgvigil_server_in_recovery", &primary), Some(0.0));
}

/// Replay paused, WAL written: lag in bytes and seconds on both sides, and the alert on both.
async fn lag_while_replay_is_paused(pair: &Pair) {
    pair.standby.pause_replay();
    pair.primary.generate_wal(PAUSED_WAL);
    let paused = PAUSED_WAL as f64;
    let m = pair
        .daemon
        .wait_for(
            "lag in bytes and seconds while replay is paused",
            WAIT,
            |m| {
                let bytes = value(m, "pgvigil_replication_lag_bytes", &pair.stage("replay"))?;
                let seconds = value(m, "pgvigil_replication_lag_seconds", &pair.stage("replay"))?;
                let standby_bytes = value(m, "pgvigil_standby_replay_lag_bytes", &ME)?;
                let standby_seconds = value(m, "pgvigil_standby_replay_lag_seconds", &ME)?;
                (bytes >= paused
                    && seconds >= 1.0
                    && standby_bytes >= paused
                    && standby_seconds >= 1.0)
                    .then(|| m.clone())
            },
        )
        .await;
    assert_eq!(value(&m, "pgvigil_standby_replay_paused", &ME), Some(1.0));
    // Written and flushed on the standby: only replay is behind.
    assert!(value(&m, "pgvigil_replication_lag_bytes", &pair.stage("flush")).unwrap() < paused);
    let (primary_side, standby_side) = wait_async(
        "ReplicationLagHigh on the primary and on the standby",
        WAIT,
        || async {
            let standby_side = pair
                .firing("ReplicationLagHigh", &[("target", "standby")])
                .await?;
            let primary_side = pair
                .firing("ReplicationLagHigh", &pair.on_primary())
                .await?;
            Some((primary_side, standby_side))
        },
    )
    .await;
    let lag_bytes = |a: &Value| {
        a["annotations"]["lag_bytes"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!(lag_bytes(&primary_side) >= paused, "{primary_side}");
    assert!(lag_bytes(&standby_side) >= paused, "{standby_side}");
    assert_eq!(
        standby_side["annotations"]["replay_paused"], "true",
        "{standby_side}"
    );
}

/// Replay resumed: back to zero on both sides, and the alerts resolve.
async fn lag_back_to_zero_after_resume(pair: &Pair) {
    pair.standby.resume_replay();
    pair.standby.wait_for_replay();
    pair.daemon
        .wait_for("lag back to zero after resume", WAIT, |m| {
            let zero = |name: &str, labels: &[(&str, &str)]| value(m, name, labels) == Some(0.0);
            (zero("pgvigil_replication_lag_bytes", &pair.stage("replay"))
                && zero("pgvigil_replication_lag_seconds", &pair.stage("replay"))
                && zero("pgvigil_standby_replay_lag_bytes", &ME)
                && zero("pgvigil_standby_replay_lag_seconds", &ME))
            .then_some(())
        })
        .await;
    wait_async("ReplicationLagHigh resolved", WAIT, || async {
        let firing = pair.firing("ReplicationLagHigh", &[]).await;
        firing.is_none().then_some(())
    })
    .await;
}

/// The standby stops: the primary reports it gone, and StandbyNotStreaming fires there.
async fn stopped_standby_alerts_on_the_primary(pair: &Pair) {
    pair.standby.stop();
    pair.daemon
        .wait_for("the stopped standby reported gone", WAIT, |m| {
            let streaming = value(
                m,
                "pgvigil_replication_standby_streaming",
                &pair.on_primary(),
            );
            (streaming == Some(0.0)
                && value(m, "pgvigil_replication_standbys", &[("target", "primary")]) == Some(0.0)
                && value(m, "pgvigil_up", &ME) == Some(0.0))
            .then_some(())
        })
        .await;
    let alert = wait_async("StandbyNotStreaming on the primary", WAIT, || async {
        pair.firing("StandbyNotStreaming", &pair.on_primary()).await
    })
    .await;
    assert_eq!(alert["annotations"]["state"], "absent", "{alert}");
}

/// The standby comes back, then its primary stops: on the standby, StandbyNotStreaming fires
/// and its replay lag grows although it replayed everything it received
/// (postgres_exporter#977's blind spot).
async fn standby_cut_off_from_its_primary(pair: &Pair) {
    pair.standby.restart();
    pair.standby.wait_for_streaming();
    wait_async(
        "StandbyNotStreaming resolved on the primary",
        WAIT,
        || async {
            let firing = pair.firing("StandbyNotStreaming", &pair.on_primary()).await;
            firing.is_none().then_some(())
        },
    )
    .await;
    pair.daemon
        .wait_for("the standby streaming again", WAIT, |m| {
            (value(m, "pgvigil_standby_wal_receiver_streaming", &ME) == Some(1.0)
                && value(m, "pgvigil_standby_replay_lag_seconds", &ME) == Some(0.0))
            .then_some(())
        })
        .await;
    pair.primary.stop();
    let (receive, replay) = pair
        .daemon
        .wait_for("a cut-off standby's lag growing", WAIT, |m| {
            let cut_off = value(m, "pgvigil_standby_wal_receiver_streaming", &ME) == Some(0.0);
            let lag = value(m, "pgvigil_standby_replay_lag_seconds", &ME)?;
            let receive = value(m, "pgvigil_standby_receive_lsn_bytes", &ME)?;
            let replay = value(m, "pgvigil_standby_replay_lsn_bytes", &ME)?;
            (cut_off && lag >= 1.0).then_some((receive, replay))
        })
        .await;
    assert!(
        replay >= receive,
        "everything received is replayed ({receive} received, {replay} replayed)"
    );
    let alert = wait_async("StandbyNotStreaming on the standby", WAIT, || async {
        pair.firing("StandbyNotStreaming", &[("target", "standby")])
            .await
    })
    .await;
    assert_ne!(
        alert["annotations"]["wal_receiver_status"], "streaming",
        "{alert}"
    );
}

/// Polls of the replication collector on `target` so far.
fn replication_polls(m: &Metrics, target: &str) -> f64 {
    m.sum(
        "pgvigil_poll_duration_seconds_count",
        &[("target", target), ("collector", "replication")],
    )
}

/// Watches an idle primary and its standby for at least [`IDLE`] and 100 polls of the
/// standby: its replay lag never leaves 0 (beyond one poll interval), the primary's view of
/// it neither, while `now() - pg_last_xact_replay_timestamp()` (the measure of
/// postgres_exporter#385) grows past a minute.
async fn idle_without_phantom_lag(pair: &Pair) {
    let started = Instant::now();
    let first = replication_polls(&pair.daemon.metrics().await, "standby");
    let (mut worst, mut worst_primary): (f64, f64) = (0.0, 0.0);
    let mut scrapes = 0;
    // Every scrape of the wait is a sample of both lags.
    pair.daemon
        .wait_for(
            "an idle minute and 100 polls of the standby",
            IDLE + WAIT,
            |m| {
                scrapes += 1;
                let lag = value(m, "pgvigil_standby_replay_lag_seconds", &ME)
                    .expect("the standby's replay lag");
                worst = worst.max(lag);
                if let Some(lag) =
                    value(m, "pgvigil_replication_lag_seconds", &pair.stage("replay"))
                {
                    worst_primary = worst_primary.max(lag);
                }
                let polls = replication_polls(m, "standby") - first;
                (started.elapsed() >= IDLE && polls >= 100.0).then_some(())
            },
        )
        .await;
    assert!(
        worst <= 1.0 && worst_primary <= 1.0,
        "replay lag while the primary was idle: {worst} s on the standby, {worst_primary} s on \
         the primary ({scrapes} scrapes)"
    );
    let naive: f64 = pair
        .standby
        .psql(
            "postgres",
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
        )
        .parse()
        .unwrap();
    assert!(
        naive >= IDLE.as_secs_f64(),
        "the naive lag should have grown over the idle minute: {naive}"
    );
}

#[tokio::test]
async fn an_unconsumed_slot_retains_wal_and_a_failing_archive_command_alerts() {
    let cluster = TestCluster::builder()
        .setting("archive_mode", "on")
        .setting("archive_command", "false")
        .start();
    cluster.create_physical_slot("forgotten");
    let daemon = Daemon::start(&one_target(
        "main",
        &cluster.dsn("postgres"),
        "[targets.wal_directory]\ninterval = \"1s\"\n\
         [targets.alerts.ReplicationSlotWalRetentionHigh]\nfor = \"0s\"\nmax_retained_bytes = 16777216\n\
         [targets.alerts.ReplicationSlotInactive]\nfor = \"0s\"\n\
         [targets.alerts.ArchiveFailing]\nfor = \"0s\"\n",
    ))
    .await;
    let main = [("target", "main")];
    let slot = [("target", "main"), ("slot_name", "forgotten")];

    // Before any WAL: the slot is there, inactive, below the threshold. Each collector
    // publishes when it finishes, so wait for both the slots' and the archiver's series.
    let m = daemon
        .wait_for("the slot and the archiver", WAIT, |m| {
            let slots = m.value("pgvigil_replication_slot_active", &slot);
            let archiver = m.value("pgvigil_archiver_enabled", &main);
            (slots.is_some() && archiver.is_some()).then(|| m.clone())
        })
        .await;
    assert_eq!(m.value("pgvigil_replication_slot_active", &slot), Some(0.0));
    assert_eq!(m.value("pgvigil_replication_slots", &main), Some(1.0));
    assert!(
        m.value("pgvigil_replication_slot_retained_wal_bytes", &slot)
            .unwrap()
            < 16_777_216.0
    );
    assert!(
        m.matching("pgvigil_replication_slot_wal_status", &slot)
            .any(|(l, v)| l["wal_status"] == "reserved" && v == 1.0),
        "{}",
        m.text
    );
    assert_eq!(m.value("pgvigil_archiver_enabled", &main), Some(1.0));

    // 32 MiB of WAL: the slot retains it, and the archiver fails on the finished segments.
    cluster.generate_wal(32 << 20);
    let (retained, failed) = daemon
        .wait_for("retained WAL and failed archive attempts", WAIT, |m| {
            let retained = m.value("pgvigil_replication_slot_retained_wal_bytes", &slot)?;
            let failed = m.value("pgvigil_archiver_failed_total", &main)?;
            let dir = m.value("pgvigil_wal_directory_bytes", &main)?;
            (retained >= f64::from(32 << 20)
                && dir >= retained
                && failed >= 1.0
                && m.value("pgvigil_archiver_failing", &main) == Some(1.0))
            .then_some((retained, failed))
        })
        .await;

    let retention = wait_async("ReplicationSlotWalRetentionHigh", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[
                ("alertname", "ReplicationSlotWalRetentionHigh"),
                ("slot_name", "forgotten"),
            ],
        )
        .await
    })
    .await;
    let annotated: f64 = retention["annotations"]["retained_bytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(annotated >= retained - f64::from(1 << 20), "{retention}");
    assert_eq!(retention["labels"]["severity"], "warning", "{retention}");
    assert!(
        api_active(
            &daemon,
            "firing",
            &[
                ("alertname", "ReplicationSlotInactive"),
                ("slot_name", "forgotten")
            ],
        )
        .await
        .is_some()
    );

    let archive = wait_async("ArchiveFailing", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "ArchiveFailing"), ("target", "main")],
        )
        .await
    })
    .await;
    let count: f64 = archive["annotations"]["failed_count"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= failed, "{archive}");
    assert!(
        archive["annotations"]["last_failed_wal"]
            .as_str()
            .unwrap()
            .len()
            == 24,
        "{archive}"
    );
    daemon.stop().await;
}

/// Every metric the replication, slots, archiver and WAL directory collectors declare, from
/// real polls of a PostgreSQL 17 primary (which has every column: `inactive_since` 17+,
/// `conflicting` 16+, `pg_stat_wal`'s I/O columns up to 17) and its standby. The primary has a
/// physical and a logical slot (a `catalog_xmin`), `max_slot_wal_keep_size` set (a
/// `safe_wal_size`), and an `archive_command` that fails once and then succeeds (a last
/// failure and a last success). `tests/it/registry.rs` leaves these collectors to this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replication_metric_is_published_by_real_polls() {
    // In /tmp: the server's OS user must be able to create it (a test's own temporary
    // directory is private to the test's user).
    let failed_once = std::env::temp_dir().join(format!(
        "pgvigil-archive-failed-once-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let primary = TestCluster::builder()
        .version(17)
        .setting("wal_level", "logical")
        .setting("max_slot_wal_keep_size", "1GB")
        .setting("archive_mode", "on")
        .setting(
            "archive_command",
            &format!(
                "test -f {f} || (touch {f}; false)",
                f = failed_once.display()
            ),
        )
        .start();
    let standby = primary.start_standby();
    primary.create_physical_slot("physical");
    primary.psql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('logical', 'test_decoding')",
    );
    primary.psql("postgres", "SELECT pg_switch_wal()");
    primary.generate_wal(1 << 20);
    primary.psql("postgres", "SELECT pg_switch_wal()");
    let daemon = Daemon::start(&format!(
        "{}{}",
        one_target(
            "primary",
            &primary.dsn("postgres"),
            "[targets.wal_directory]\ninterval = \"200ms\"\n",
        ),
        one_target("standby", &standby.dsn("postgres"), "")
    ))
    .await;
    let specs = [
        "replication",
        "replication_slots",
        "archiver",
        "wal_directory",
    ];
    let declared: Vec<&str> = pgvigil::collect::registry::POSTGRES
        .iter()
        .filter(|s| specs.contains(&s.name))
        .flat_map(|s| s.metrics.iter().map(|m| m.name))
        .collect();
    assert!(declared.len() >= 40, "{declared:?}");
    let mut missing = Vec::new();
    daemon
        .wait_for("every replication metric", WAIT, |m| {
            missing = declared
                .iter()
                .copied()
                .filter(|name| m.samples.iter().all(|(n, _, _)| n != name))
                .collect();
            missing.is_empty().then_some(())
        })
        .await;
    assert!(missing.is_empty(), "never published: {missing:?}");
    daemon.stop().await;
    let _ = std::fs::remove_file(&failed_once);
}
