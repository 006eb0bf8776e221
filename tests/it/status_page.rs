//! The status pages in a real browser (Debian's chromium, headless) against a daemon watching
//! the demo's lost-import scenario: the forgotten COMMIT next to a correct import, a session
//! holding writes whose last statement carries markup, and an audit row whose fields do.
//!
//! Each page is loaded once: the alerts and the numbers must be in the DOM chromium built, the
//! console must stay silent (no error, no CSP violation, no failed load), and the injected
//! `<script>` and `onerror` handler must neither run nor become elements. With
//! `PGVIGIL_BLESS=1` the test also saves the README's screenshots into `docs/screenshots/`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::imports::{import_correctly, import_forgetting_commit, setup};
use crate::support::{Daemon, connect, one_target};
use crate::support_alerting::wait_async;
use crate::support_browser::{self, Loaded};

/// Markup that, if it ever ran, would leave its mark on the DOM (`data-xss`, the title).
const HOSTILE: &str = "<script>document.title='XSS'</script><img src=x onerror=\"document.body.setAttribute('data-xss','1')\">";
const WAIT: Duration = crate::support::CEILING;

async fn page(daemon: &Daemon, path: &str) -> String {
    let (status, body) = daemon.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Load `path` in chromium (off the runtime, which keeps serving meanwhile).
async fn browse(daemon: &Daemon, path: &str) -> Loaded {
    let url = format!("http://{}{path}", daemon.addr);
    tokio::task::spawn_blocking(move || support_browser::load(&url))
        .await
        .unwrap()
}

/// What every page must show of the hostile text: escaped, inert, silent.
fn assert_inert(path: &str, loaded: &Loaded) {
    let dom = &loaded.dom;
    assert!(
        loaded.console.is_empty(),
        "{path}: console: {:?}",
        loaded.console
    );
    assert!(
        !dom.contains("data-xss=\"1\""),
        "{path}: the onerror handler ran:\n{dom}"
    );
    assert!(
        !dom.contains("<title>XSS"),
        "{path}: the script ran:\n{dom}"
    );
    assert!(
        !dom.contains("<script") && !dom.contains("<img"),
        "{path}: markup became elements:\n{dom}"
    );
}

/// The response head of `path`, for its headers.
async fn head_of(daemon: &Daemon, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(h, _)| h.to_owned())
}

#[tokio::test]
async fn the_pages_show_the_lost_import_in_a_real_browser_and_run_no_injected_script() {
    let (cluster, db, audit) = setup("browser").await;
    let dsn = cluster.dsn(&db);
    let daemon = Daemon::start(&one_target(
        "main",
        &dsn,
        "[targets.imports]\ngrace_period = \"100ms\"",
    ))
    .await;
    let ok = import_correctly(&dsn, &audit, "good.csv", 1_000).await;
    let (lost, _) = import_forgetting_commit(&dsn, &audit, 10_000).await;
    // An audit row written by a hostile (or careless) app: markup in its text fields.
    let hostile: String = audit
        .query_one(
            "INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, error_message, finished_at)
             VALUES (gen_random_uuid(), 'contacts', $1, 5, 'failed', $1, now()) RETURNING import_id::text",
            &[&HOSTILE],
        )
        .await
        .unwrap()
        .get(0);
    // A session holding writes whose last statement carries markup (pg_stat_activity's query).
    let writer = connect(&dsn).await;
    writer
        .batch_execute(&format!(
            "BEGIN; INSERT INTO contacts (email) VALUES ('w'); SELECT 1 /* {HOSTILE} */"
        ))
        .await
        .unwrap();

    // Signals: the shortfall firing, the hostile statement on the page, the writes chart at 1.
    wait_async(
        "ImportRowShortfall firing for the lost import",
        WAIT,
        || async {
            let (_, body) = daemon.get("/api/v1/alerts").await;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["active"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "ImportRowShortfall"
                        && a["labels"]["import_id"] == lost.as_str()
                        && a["state"] == "firing"
                })
                .then_some(())
        },
    )
    .await;
    wait_async(
        "the writes chart to show the open transaction and the history the shortfall",
        WAIT,
        || async {
            let body = page(&daemon, "/targets/main").await;
            let import = page(&daemon, &format!("/imports/{lost}")).await;
            // The history has sampled the shortfall (the import page's timeline shows it).
            (body.contains("open with writes <b>1</b>")
                && body.contains("SELECT 1 /* &lt;script&gt;")
                && import.contains("pgvigil&#39;s verdict: shortfall"))
            .then_some(())
        },
    )
    .await;

    let started = std::time::Instant::now();
    let overview = browse(&daemon, "/").await;
    assert_inert("/", &overview);
    let dom = &overview.dom;
    // Firing alerts first, with the runbook's first step.
    let alerts_at = dom.find("id=\"alerts\"").expect("an alerts section");
    assert!(
        alerts_at < dom.find("id=\"targets\"").unwrap(),
        "alerts come first"
    );
    assert!(
        dom.contains("ImportRowShortfall") && dom.contains("firing"),
        "{dom}"
    );
    assert!(
        dom.contains("First step:</b> Re-run the import from <code>source</code>"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("href=\"/imports/{}\"", lost)),
        "{dom}"
    );
    assert!(dom.contains("href=\"/targets/main\""), "{dom}");
    assert!(dom.contains(&ok) && dom.contains(&hostile), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title="),
        "escaped text is shown: {dom}"
    );

    let target = browse(&daemon, "/targets/main").await;
    assert_inert("/targets/main", &target);
    let dom = &target.dom;
    for chart in [
        "Client connections by state",
        "Transactions holding uncommitted writes",
        "Poll duration",
        "Live rows of watched tables",
        "Import verdicts",
    ] {
        assert!(
            dom.contains(&format!("<figcaption>{chart}</figcaption><svg")),
            "{chart}: {dom}"
        );
    }
    assert!(dom.contains("usable limit"), "{dom}");
    assert!(
        dom.contains("<td>") && dom.contains(&format!("<td>{db}</td>")),
        "databases listed: {dom}"
    );
    assert!(dom.contains("open with writes <b>1</b>"), "{dom}");
    assert!(
        dom.contains("class=\"v-shortfall\""),
        "verdict timeline: {dom}"
    );
    // The server-health collectors have their sections too (from the same hook).
    assert!(
        dom.contains("id=\"wraparound\">Transaction ID age</h2>"),
        "{dom}"
    );

    let import = browse(&daemon, &format!("/imports/{lost}")).await;
    assert_inert("/imports/<lost>", &import);
    let dom = &import.dom;
    assert!(
        dom.contains("class=\"v-shortfall\">shortfall</td>"),
        "{dom}"
    );
    for (label, value) in [
        ("expected rows", "10000"),
        ("committed rows", "0"),
        ("missing rows", "10000"),
    ] {
        assert!(
            dom.contains(&format!("<th>{label}</th><td class=\"num\">{value}</td>")),
            "{label}: {dom}"
        );
    }
    assert!(dom.contains("aborted"), "the transaction's fate: {dom}");
    assert!(
        dom.contains("audit row created") && dom.contains("pgvigil's verdict: shortfall"),
        "{dom}"
    );
    assert!(dom.contains("ImportRowShortfall firing"), "{dom}");
    assert!(
        dom.contains("Confirm it yourself") && dom.contains("SELECT count(*)"),
        "{dom}"
    );
    assert!(dom.contains("href=\"/targets/main\""), "{dom}");

    let bad = browse(&daemon, &format!("/imports/{hostile}")).await;
    assert_inert("/imports/<hostile>", &bad);
    assert!(bad.dom.contains("&lt;img src=x onerror="), "{}", bad.dom);
    let browsing = started.elapsed();

    // No script may run even if escaping failed: the pages forbid scripts.
    let head = head_of(&daemon, "/targets/main").await.to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let (status, body) = daemon.get("/targets/nope%3Cb%3E").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("No target <code>nope&lt;b&gt;</code>"),
        "{body}"
    );
    let (status, _) = daemon
        .get("/imports/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, 404);

    if std::env::var_os("PGVIGIL_BLESS").is_some() {
        bless(&daemon, &lost).await;
    }
    eprintln!("four pages loaded in chromium in {browsing:?}");
    drop(writer);
    daemon.stop().await;
}

/// Save the README's screenshots (light overview, target and import pages, a dark target).
async fn bless(daemon: &Daemon, lost: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let shots = [
        ("/".to_owned(), "overview.png", (1280, 1100), false),
        (
            "/targets/main".to_owned(),
            "target.png",
            (1280, 2300),
            false,
        ),
        (
            "/targets/main".to_owned(),
            "target-dark.png",
            (1280, 2300),
            true,
        ),
        (
            format!("/imports/{lost}"),
            "import.png",
            (1280, 1000),
            false,
        ),
    ];
    for (path, file, size, dark) in shots {
        let url = format!("http://{}{path}", daemon.addr);
        let out = dir.join(file);
        tokio::task::spawn_blocking(move || support_browser::screenshot(&url, &out, size, dark))
            .await
            .unwrap();
    }
}
