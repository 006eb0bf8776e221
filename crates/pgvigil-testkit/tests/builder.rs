//! `TestCluster::builder()`: settings, `pg_hba.conf` lines and TLS files take effect on a real
//! server; `reload()` waits for an edit to apply.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use pgvigil_testkit::{TestCluster, find_program, wait_until};

#[test]
fn settings_take_effect_and_survive_a_restart() {
    let cluster = TestCluster::builder()
        .setting("work_mem", "7MB")
        .setting("work_mem", "9MB")
        .setting("cluster_name", "it's quoted")
        .start();
    let settings = "SELECT current_setting('work_mem'), current_setting('cluster_name')";
    assert_eq!(cluster.psql("postgres", settings), "9MB|it's quoted");
    // The template's settings are still there.
    assert_eq!(
        cluster.psql("postgres", "SHOW shared_preload_libraries"),
        "pg_stat_statements"
    );
    // They are in the cluster's include file, read at every start.
    cluster.restart();
    assert_eq!(cluster.psql("postgres", settings), "9MB|it's quoted");
}

#[test]
fn a_failing_archive_command_counts_failures() {
    let cluster = TestCluster::builder()
        .setting("archive_mode", "on")
        .setting("archive_command", "false")
        .start();
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT current_setting('archive_mode'), current_setting('archive_command')"
        ),
        "on|false"
    );
    cluster.generate_wal(1);
    cluster.psql("postgres", "SELECT pg_switch_wal()");
    let row = wait_until(
        "the archiver to fail a segment",
        Duration::from_secs(30),
        || {
            let row = cluster.psql(
                "postgres",
                "SELECT failed_count, last_failed_wal IS NOT NULL, archived_count \
                 FROM pg_stat_archiver",
            );
            (!row.starts_with("0|")).then_some(row)
        },
    );
    let fields: Vec<&str> = row.split('|').collect();
    assert!(fields[0].parse::<u64>().unwrap() >= 1, "{row}");
    assert_eq!(&fields[1..], ["t", "0"], "{row}");
}

#[test]
#[should_panic(expected = "unrecognized configuration parameter")]
fn an_unknown_setting_fails_the_start_with_the_log() {
    TestCluster::builder()
        .setting("no_such_setting", "1")
        .start();
}

#[test]
#[should_panic(expected = "is not installed")]
fn a_missing_version_fails_the_start() {
    TestCluster::builder().version(99).start();
}

#[test]
fn hba_lines_come_first_and_reload_waits_for_an_edit() {
    let cluster = TestCluster::builder()
        .hba_line("host all turned_away 127.0.0.1/32 reject")
        .start();
    cluster.psql(
        "postgres",
        "CREATE ROLE turned_away LOGIN; CREATE ROLE welcome LOGIN",
    );
    let refused = connect(&cluster, "user=turned_away", &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("pg_hba.conf rejects connection"),
        "{stderr}"
    );
    assert!(connect(&cluster, "user=welcome", &[]).status.success());

    // An edit at run time applies to every session started after reload() returns.
    let hba = cluster.data_dir().unwrap().join("pg_hba.conf");
    let old = fs::read_to_string(&hba).unwrap();
    fs::write(&hba, format!("host all welcome 127.0.0.1/32 reject\n{old}")).unwrap();
    cluster.reload();
    let refused = connect(&cluster, "user=welcome", &[]);
    assert!(!refused.status.success(), "welcome is refused after reload");
    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
}

#[test]
fn client_certificates_with_ssl_files_and_a_cert_line() {
    let certs = Certs::new();
    let cluster = TestCluster::builder()
        .ssl(&certs.path("server.crt"), &certs.path("server.key"))
        .ssl_ca(&certs.path("ca.crt"))
        .hba_line("hostssl all all 127.0.0.1/32 cert clientcert=verify-full")
        .start();
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT current_setting('ssl'), current_setting('ssl_ca_file')"
        ),
        "on|root.crt"
    );

    // TLS with a client certificate whose CN is the user: in, encrypted.
    let client = [
        ("sslcert", certs.path("client.crt")),
        ("sslkey", certs.path("client.key")),
        ("sslrootcert", certs.path("ca.crt")),
    ];
    let ok = connect(&cluster, "user=postgres sslmode=verify-ca", &client);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "t");

    // TLS without one: turned away by the cert line.
    let refused = connect(&cluster, "user=postgres sslmode=require", &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");

    // The testkit's own sessions connect without TLS, so they still get in; so does a standby,
    // which gets the same files and lines.
    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
    let standby = cluster.start_standby();
    let ok = connect(&standby, "user=postgres sslmode=verify-ca", &client);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Runs `psql` against `cluster` with `conninfo` (plus `files` as `key=path` pairs), printing
/// whether the session uses TLS.
fn connect(cluster: &TestCluster, conninfo: &str, files: &[(&str, PathBuf)]) -> Output {
    let mut dsn = format!(
        "host=127.0.0.1 port={} dbname=postgres connect_timeout=10 {conninfo}",
        cluster.port()
    );
    for (key, path) in files {
        dsn.push_str(&format!(" {key}={}", path.display()));
    }
    Command::new(cluster.psql_program())
        .args(["-X", "-At", "-d", &dsn, "-c"])
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .env_remove("PGSSLMODE")
        .output()
        .expect("psql runs")
}

/// A throwaway CA with a server certificate for 127.0.0.1 and a client certificate for
/// `postgres`, EC keys (fast to make), in a directory removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "pgvigil-testkit-certs-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        let certs = Certs { dir };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        certs.openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
            &["-subj", "/CN=pgvigil-testkit CA", "-days", "2"],
        );
        for (name, cn) in [("server", "127.0.0.1"), ("client", "postgres")] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            certs.openssl(
                &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr]].concat(),
                &["-subj", &format!("/CN={cn}")],
            );
            certs.openssl(
                &[
                    "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                ],
                &["-CAcreateserial", "-days", "2", "-out", &crt],
            );
            // libpq and the server refuse private keys others can read.
            fs::set_permissions(certs.path(&key), fs::Permissions::from_mode(0o600)).unwrap();
        }
        certs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str], more: &[&str]) {
        let out = Command::new(find_program("openssl"))
            .args(args)
            .args(more)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?} {more:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
