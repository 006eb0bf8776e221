//! A real Prometheus (Debian's package) for tests: scrapes given addresses every second, loads
//! rule files, and answers PromQL through its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgvigil_testkit::{find_program, free_port};

use crate::support::http_get;

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    /// Start Prometheus scraping `targets` (job `pgvigil`) every second.
    pub fn start(targets: &[SocketAddr], rule_files: &[&Path]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets = targets
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let rules = rule_files
            .iter()
            .map(|p| format!("  - \"{}\"\n", p.display()))
            .collect::<String>();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}scrape_configs:\n  - job_name: pgvigil\n    static_configs:\n      - targets: [{targets}]\n"
        );
        Prometheus::start_with_config(dir, &config)
    }

    /// Start Prometheus with a whole `prometheus.yml` (written into `dir`, which it keeps).
    pub fn start_with_config(dir: tempfile::TempDir, config: &str) -> Prometheus {
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(find_program("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
            log,
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        crate::support::wait_for_200(&runtime, addr, "/-/ready", "Prometheus to be ready");
        prometheus
    }

    /// Evaluate an instant query now; Ok(result array) or Err(Prometheus' error).
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        self.query_at_time(expr, None).await
    }

    /// Evaluate an instant query at `time` (Unix seconds), e.g. an instant from
    /// [`Prometheus::healthy_instant`], so that every query of a check sees the same data.
    pub async fn query_at(&self, expr: &str, time: f64) -> Result<Vec<serde_json::Value>, String> {
        self.query_at_time(expr, Some(time)).await
    }

    async fn query_at_time(
        &self,
        expr: &str,
        time: Option<f64>,
    ) -> Result<Vec<serde_json::Value>, String> {
        let at = time.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}{at}", encode(expr)),
            None,
        )
        .await;
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{}: {}", json["errorType"], json["error"]));
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Wait until `expr` returns at least one series.
    pub async fn wait_for_data(&self, expr: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(result) = self.query(expr).await {
                if !result.is_empty() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no data for {expr} after {timeout:?}; Prometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// An instant (Unix seconds, as Prometheus evaluated it) at which each of the `targets`
    /// scrape targets has had every scrape of the last 5 s succeed, at least three of them.
    ///
    /// A failed scrape (a `/metrics` that outlasts the 1 s scrape timeout on a loaded machine)
    /// marks every series of its target stale at once, so an instant query right after it
    /// finds nothing, and the rules evaluated then see nothing either. Queries pinned to this
    /// instant with [`Prometheus::query_at`] see what the last good scrapes exported, and rule
    /// results evaluated on fresh inputs.
    pub async fn healthy_instant(&self, targets: usize, timeout: Duration) -> f64 {
        let expr = "min_over_time(up[5s]) == 1 and count_over_time(up[5s]) >= 3";
        let what = format!("an instant with {targets} targets scraped well for 5 s");
        crate::support_alerting::wait_async(&what, timeout, || async {
            let result = self.query(expr).await.ok()?;
            (result.len() == targets)
                .then(|| result[0]["value"][0].as_f64())
                .flatten()
        })
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
