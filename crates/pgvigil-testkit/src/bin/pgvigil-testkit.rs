//! `pgvigil-testkit cluster`: a throwaway PostgreSQL cluster for test suites that are not written
//! in Rust (the Python client's pytest suite, clients/python/tests/conftest.py).
//!
//! It starts a [`TestCluster`] (the same template-copied, watchdog-guarded cluster the Rust
//! tests get, or the server named by `PGVIGIL_TEST_DSN`), prints one line of JSON with how to
//! reach it, and keeps it until its standard input is closed; then the cluster is stopped and
//! removed. The caller holds the pipe: if it dies, the pipe closes and the cluster goes too (and
//! if this process is killed, the cluster's watchdog removes it within a second).
//!
//! ```text
//! $ pgvigil-testkit cluster
//! {"dsn":"host=127.0.0.1 port=40123 user=postgres dbname=postgres","host":"127.0.0.1","port":40123,"user":"postgres"}
//! ```

use std::io::Read;
use std::process::ExitCode;

use pgvigil_testkit::TestCluster;

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("cluster") || args.len() != 1 {
        eprintln!(
            "usage: pgvigil-testkit cluster\n  starts a throwaway PostgreSQL cluster, prints how \
             to reach it as one JSON line, and removes it when stdin is closed"
        );
        return ExitCode::from(2);
    }
    let cluster = TestCluster::start();
    println!(
        "{{\"dsn\":{},\"host\":{},\"port\":{},\"user\":{}}}",
        json_string(&cluster.dsn("postgres")),
        json_string(&cluster.host()),
        cluster.port(),
        json_string(&cluster.superuser()),
    );
    // Held until the caller closes the pipe (or exits).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(cluster);
    ExitCode::SUCCESS
}
