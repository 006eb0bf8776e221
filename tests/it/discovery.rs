//! File discovery against real PostgreSQL: writing, editing and deleting a file_sd file adds,
//! changes and removes targets (each waited for, never slept on); a malformed
//! file keeps its last good targets and says where it is wrong.

use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::Daemon;
use crate::support_alerting::wait_async;

/// The ceiling of each wait (the change shows at the next file event or refresh).
const WITHIN: Duration = crate::support::CEILING;

async fn described(daemon: &Daemon, name: &str) -> Option<String> {
    let (_, body) = daemon.get("/api/v1/targets").await;
    let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
    targets
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["connection"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn writing_editing_and_deleting_a_file_adds_changes_and_removes_targets() {
    let cluster = TestCluster::start();
    let one = cluster.create_database_without_extensions("disc_one");
    let two = cluster.create_database_without_extensions("disc_two");
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    let file = dir.path().join("pgvigil.toml");
    // A long refresh_interval: only the file watcher can make this test pass in time.
    std::fs::write(
        &file,
        format!(
            "[discovery]\nfiles = [\"{}/*.json\"]\nrefresh_interval = \"10m\"\n\
             [discovery.defaults]\ndsn = \"user={}\"\npoll_interval = \"200ms\"\n\
             [discovery.defaults.statements]\nenabled = false\n",
            targets.display(),
            cluster.superuser()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_file(&file).await;
    let (host, port) = (cluster.host(), cluster.port());
    let group = |db: &str| {
        format!(
            r#"[{{"targets": ["{host}:{port}"], "labels": {{"__pgvigil_name": "found", "__pgvigil_dbname": "{db}", "team": "crm"}}}}]"#
        )
    };
    let sd = targets.join("fleet.json");

    std::fs::write(&sd, group(&one)).unwrap();
    daemon
        .wait_for("the discovered target up", WITHIN, |m| {
            (m.value("pgvigil_up", &[("target", "found")]) == Some(1.0)).then_some(())
        })
        .await;
    assert!(
        described(&daemon, "found")
            .await
            .unwrap()
            .ends_with(&format!("/{one}"))
    );

    std::fs::write(&sd, group(&two)).unwrap();
    wait_async("the edit applied", WITHIN, || async {
        described(&daemon, "found")
            .await
            .filter(|c| c.ends_with(&format!("/{two}")))
    })
    .await;

    // A broken file: reported with its path and position; the last good target stays.
    std::fs::write(&sd, "[{\"targets\": [\"x:1\"],\n  oops}]").unwrap();
    let page = wait_async("the error on the status page", WITHIN, || async {
        let (_, page) = daemon.get("/").await;
        page.contains("Discovery file not read").then_some(page)
    })
    .await;
    assert!(page.contains(&format!("{}:2:", sd.display())), "{page}");
    assert!(
        described(&daemon, "found")
            .await
            .unwrap()
            .ends_with(&format!("/{two}"))
    );

    std::fs::remove_file(&sd).unwrap();
    wait_async("the target removed", WITHIN, || async {
        described(&daemon, "found").await.is_none().then_some(())
    })
    .await;
    let m = daemon.metrics().await;
    assert!(m.value("pgvigil_up", &[("target", "found")]).is_none());
    daemon.stop().await;
}
