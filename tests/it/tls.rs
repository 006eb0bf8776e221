//! TLS to a target: a private cluster with `ssl = on` and a certificate from a throwaway CA,
//! reached with each `tls_verify` mode; and the config errors of the TLS keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgvigil::config::{Config, LibpqEnv};
use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, connect, one_target};
use crate::support_alerting::wait_async;
use crate::support_certs::openssl;

const WAIT: Duration = crate::support::CEILING;

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, in `dir`:
/// `ca.crt`, `server.crt`, `server.key`. EC keys: RSA key generation would burn CPU that the
/// timing-sensitive tests running beside this one need.
fn make_certificates(dir: &Path) {
    make_certificates_signed_with(dir, "-sha256");
}

/// [`make_certificates`], the server certificate signed with `digest` (`-sha384`: what SCRAM
/// channel binding hashes it with).
fn make_certificates_signed_with(dir: &Path, digest: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pgvigil test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            digest,
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// Install the server certificate in the cluster's data directory, owned like the directory
/// (the `postgres` user when the tests run as root) with mode 0600 as the server demands, and
/// restart with `ssl = on`.
fn enable_ssl(cluster: &TestCluster, certs: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data = cluster.data_dir().expect("a private cluster");
    let owner = std::fs::metadata(&data).unwrap();
    for file in ["server.crt", "server.key"] {
        let to = data.join(format!("pgvigil-test-{file}"));
        std::fs::copy(certs.join(file), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    cluster.psql(
        "postgres",
        "ALTER SYSTEM SET ssl_cert_file = 'pgvigil-test-server.crt';
         ALTER SYSTEM SET ssl_key_file = 'pgvigil-test-server.key';
         ALTER SYSTEM SET ssl = on;",
    );
    cluster.restart();
    assert_eq!(cluster.psql("postgres", "SHOW ssl"), "on");
}

fn dsn(cluster: &TestCluster, host: &str, db: &str) -> String {
    format!(
        "host={host} port={} user={} dbname={db} sslmode=require connect_timeout=5",
        cluster.port(),
        cluster.superuser()
    )
}

#[tokio::test]
async fn targets_connect_over_tls_as_each_verify_mode_demands() {
    let cluster = TestCluster::start_private();
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    enable_ssl(&cluster, certs.path());
    let ca = certs.path().join("ca.crt");
    // A bundle of another CA, replaced by the right one while the daemon runs.
    openssl(
        certs.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=some other CA",
            "-keyout",
            "other.key",
            "-out",
            "rotated.crt",
        ],
    );
    let rotated = certs.path().join("rotated.crt");
    let verified_db = cluster.create_database("tls_full");
    let ca_only_db = cluster.create_database("tls_ca");
    let plain_db = cluster.create_database("tls_plain");

    let toml = [
        one_target(
            "full",
            &dsn(&cluster, "localhost", &verified_db),
            &format!("tls_ca_file = \"{}\"\ntls_verify = \"full\"", ca.display()),
        ),
        // By IP: "ca" checks the chain only.
        one_target(
            "ca",
            &dsn(&cluster, "127.0.0.1", &ca_only_db),
            &format!("tls_ca_file = \"{}\"\ntls_verify = \"ca\"", ca.display()),
        ),
        // sslmode=disable on a server with ssl = on: plaintext, as asked.
        one_target(
            "plain",
            &format!("{} sslmode=disable", cluster.dsn(&plain_db)),
            "",
        ),
        one_target(
            "untrusted",
            &dsn(&cluster, "localhost", "postgres"),
            "tls_verify = \"full\"",
        ),
        one_target(
            "rotated",
            &dsn(&cluster, "localhost", "postgres"),
            &format!("tls_ca_file = \"{}\"", rotated.display()),
        ),
        one_target(
            "unverified",
            &dsn(&cluster, "localhost", "postgres"),
            "tls_verify = \"none\"",
        ),
    ]
    .concat();
    let daemon = Daemon::start(&toml).await;
    daemon
        .wait_for(
            "full, ca and unverified up, untrusted and rotated down",
            WAIT,
            |m| {
                let up = |t: &str| m.value("pgvigil_up", &[("target", t)]);
                (up("full")? == 1.0
                    && up("ca")? == 1.0
                    && up("unverified")? == 1.0
                    && up("untrusted")? == 0.0
                    && up("rotated")? == 0.0)
                    .then_some(())
            },
        )
        .await;
    // The bundle is re-read at every connect: the right one is used without a restart.
    // Renamed into place, as deployment tools do: a connect never reads a half-written file.
    let staged = certs.path().join("rotated.crt.new");
    std::fs::copy(&ca, &staged).unwrap();
    std::fs::rename(&staged, &rotated).unwrap();
    daemon
        .wait_for("rotated up with the new bundle", WAIT, |m| {
            (m.value("pgvigil_up", &[("target", "rotated")])? == 1.0).then_some(())
        })
        .await;

    // The server itself says pgvigil's sessions are encrypted. Each target holds its main
    // session and a database session; a database session opens after its main session's
    // first poll, so "up" does not mean both are open: wait for the count, then read how
    // many of them are encrypted.
    let observer = connect(&cluster.dsn("postgres")).await;
    for (db, n, what) in [
        (verified_db.as_str(), 2, "encrypted/all sessions"),
        (ca_only_db.as_str(), 2, "encrypted/all sessions"),
        ("postgres", 4, "the tls_verify = none and rotated sessions"),
    ] {
        let seen = wait_async(&format!("{n} pgvigil sessions in {db}"), WAIT, || {
            let observer = &observer;
            async move {
                let row = observer
                    .query_one(
                        "SELECT count(*) FILTER (WHERE ssl), count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'pgvigil' AND datname = $1",
                        &[&db],
                    )
                    .await
                    .unwrap();
                let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
                (all >= n).then_some(format!("{encrypted}/{all}"))
            }
        })
        .await;
        assert_eq!(seen, format!("{n}/{n}"), "{what}");
    }

    // pgvigil_up starts at 0, so "untrusted down" holds before its first attempt failed: the
    // error asserted below is waited for itself.
    daemon
        .wait_for_target("untrusted", "the verification error", WAIT, |t| {
            t["last_error"].as_str().map(|_| ())
        })
        .await;
    let (_, targets) = daemon.get("/api/v1/targets").await;
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let target = |name: &str| {
        targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no target {name} in {targets}"))
            .clone()
    };
    assert_eq!(target("full")["tls"], true, "{targets}");
    assert_eq!(target("plain")["tls"], false, "{targets}");
    assert_eq!(
        target("untrusted")["tls"],
        serde_json::Value::Null,
        "{targets}"
    );
    let untrusted = target("untrusted");
    let error = untrusted["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate verify failed"), "{error}");
    assert!(error.contains("set tls_ca_file"), "{error}");
    assert_eq!(
        error.matches("certificate verify failed").count(),
        1,
        "the cause is said once: {error}"
    );
    daemon.stop().await;
}

/// Certificates as libpq accepts them, which WebPKI alone would refuse: a CA-signed server
/// certificate without subjectAltName (the host is matched against its common name), and a
/// self-signed one (CA:TRUE, as `openssl req -x509` makes it) given as `tls_ca_file` itself.
#[tokio::test]
async fn common_name_and_self_signed_server_certificates_verify_as_in_libpq() {
    // A CA-signed certificate with CN=localhost and no subjectAltName.
    let signed = TestCluster::start_private();
    let signed_certs = tempfile::tempdir().unwrap();
    make_certificates(signed_certs.path());
    std::fs::write(
        signed_certs.path().join("server.ext"),
        "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        signed_certs.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    enable_ssl(&signed, signed_certs.path());
    // A self-signed certificate for CN=localhost, its own CA.
    let pinned = TestCluster::start_private();
    let pinned_certs = tempfile::tempdir().unwrap();
    openssl(
        pinned_certs.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ],
    );
    enable_ssl(&pinned, pinned_certs.path());

    let with = |ca: &Path, verify: &str| {
        format!(
            "tls_ca_file = \"{}\"\ntls_verify = \"{verify}\"",
            ca.display()
        )
    };
    let signed_ca = signed_certs.path().join("ca.crt");
    let pinned_ca = pinned_certs.path().join("server.crt");
    // (target, cluster, host, CA file, tls_verify); not_pinned: another self-signed
    // certificate is not the pinned one.
    let toml: String = [
        ("cn", &signed, "localhost", &signed_ca, "full"),
        ("cn_by_ip", &signed, "127.0.0.1", &signed_ca, "full"),
        ("pinned", &pinned, "localhost", &pinned_ca, "full"),
        ("pinned_ca", &pinned, "127.0.0.1", &pinned_ca, "ca"),
        ("not_pinned", &pinned, "localhost", &signed_ca, "ca"),
    ]
    .into_iter()
    .map(|(name, cluster, host, ca, verify)| {
        one_target(name, &dsn(cluster, host, "postgres"), &with(ca, verify))
    })
    .collect();
    let daemon = Daemon::start(&toml).await;
    daemon
        .wait_for(
            "cn, pinned and pinned_ca up; cn_by_ip, not_pinned down",
            WAIT,
            |m| {
                let up = |t: &str| m.value("pgvigil_up", &[("target", t)]);
                (up("cn")? == 1.0
                    && up("pinned")? == 1.0
                    && up("pinned_ca")? == 1.0
                    && up("cn_by_ip")? == 0.0
                    && up("not_pinned")? == 0.0)
                    .then_some(())
            },
        )
        .await;
    for (name, expected) in [
        ("cn_by_ip", "hostname mismatch"),
        ("not_pinned", "certificate verify failed"),
    ] {
        let error = daemon
            .wait_for_target(name, "the verification error", WAIT, |t| {
                t["last_error"].as_str().map(str::to_owned)
            })
            .await;
        assert!(error.contains(expected), "{name}: {error}");
    }
    daemon.stop().await;
}

/// SCRAM with channel binding over pgvigil's TLS: `channel_binding=require` logs in only if
/// the client hands tokio-postgres the `tls-server-end-point` hash and it equals the one the
/// server computed from its own certificate (signed with SHA-384 here, so the hash is not
/// SHA-256's default). Without a hash tokio-postgres refuses to log in under `require`; with a
/// wrong one the server refuses. The second target binds without verifying the certificate
/// (`tls_verify = "none"`): the hash comes from the certificate presented either way.
#[tokio::test]
async fn scram_channel_binding_logs_in_over_tls() {
    const ROLE: &str = "pgvigil_scram";
    let cluster = TestCluster::start_private();
    let certs = tempfile::tempdir().unwrap();
    make_certificates_signed_with(certs.path(), "-sha384");
    let data = cluster.data_dir().expect("a private cluster");
    let hba = data.join("pg_hba.conf");
    let rest = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all {ROLE} all scram-sha-256\nhost all {ROLE} all reject\n{rest}"),
    )
    .unwrap();
    cluster.psql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {ROLE} LOGIN PASSWORD 'binding' IN ROLE pg_monitor;"
        ),
    );
    enable_ssl(&cluster, certs.path());
    let ca = certs.path().join("ca.crt");
    let dsn = |db: &str| {
        format!(
            "host=localhost port={} user={ROLE} password=binding dbname={db} sslmode=require channel_binding=require",
            cluster.port()
        )
    };
    let toml = [
        one_target(
            "bound",
            &dsn("postgres"),
            &format!("tls_ca_file = \"{}\"", ca.display()),
        ),
        one_target("unverified", &dsn("postgres"), "tls_verify = \"none\""),
    ]
    .concat();
    let daemon = Daemon::start(&toml).await;
    daemon
        .wait_for("both targets logged in with channel binding", WAIT, |m| {
            let up = |t: &str| m.value("pgvigil_up", &[("target", t)]);
            (up("bound")? == 1.0 && up("unverified")? == 1.0).then_some(())
        })
        .await;
    let observer = connect(&cluster.dsn("postgres")).await;
    let row = observer
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1",
            &[&ROLE],
        )
        .await
        .unwrap();
    let (sessions, encrypted): (i64, bool) = (row.get(0), row.get(1));
    assert!(sessions >= 2, "{sessions} sessions of {ROLE}");
    assert!(encrypted, "every session of {ROLE} is encrypted");
    daemon.stop().await;
}

fn parse_error(toml: &str) -> String {
    Config::parse(Path::new("pgvigil.toml"), toml, &LibpqEnv::default())
        .expect_err("the config should be rejected")
        .to_string()
}

#[test]
fn tls_config_errors_point_at_the_key_and_say_the_fix() {
    let missing = PathBuf::from("/nonexistent/rds-ca.pem");
    let err = parse_error(&format!(
        "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\ntls_ca_file = \"{}\"\n",
        missing.display()
    ));
    assert!(
        err.starts_with("pgvigil.toml:4:15: cannot read tls_ca_file /nonexistent/rds-ca.pem"),
        "{err}"
    );

    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "hello\n").unwrap();
    let err = parse_error(&format!(
        "[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h\"\ntls_ca_file = \"{}\"\n",
        not_pem.path().display()
    ));
    assert!(err.starts_with("pgvigil.toml:4:15: tls_ca_file"), "{err}");
    assert!(err.contains("BEGIN CERTIFICATE"), "{err}");

    let err = parse_error("[[targets]]\nname = \"a\"\ndsn = \"host=h\"\ntls_verify = \"yes\"\n");
    assert!(
        err.starts_with("pgvigil.toml:4:14: invalid tls_verify \"yes\""),
        "{err}"
    );
    for choice in ["\"full\"", "\"ca\"", "\"none\""] {
        assert!(err.contains(choice), "{err}");
    }
}
