//! Client certificates to PostgreSQL: a private cluster whose `pg_hba.conf` admits a role only
//! with `hostssl ... cert clientcert=verify-full`, reached with the certificate given as keys
//! (`tls_cert_file` / `tls_key_file`) and in the DSN (`sslcert` / `sslkey`, as libpq reads
//! them), and refused without one, with the fix in the error.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, connect, one_target};
use crate::support_alerting::wait_async;
use crate::support_certs::Pki;

const WAIT: Duration = crate::support::CEILING;
const ROLE: &str = "pgvigil_cert";

/// `ssl = on` with a server certificate and `ssl_ca_file` from `pki`, and `ROLE` admitted only
/// over TLS with a client certificate whose CN is its name. The superuser's own lines (the
/// tests' psql) stay as they were.
fn require_client_certificates(cluster: &TestCluster, pki: &Pki) {
    let data = cluster.data_dir().expect("a private cluster");
    let owner = std::fs::metadata(&data).unwrap();
    let (crt, key) = pki.server("server");
    for (from, to) in [
        (crt, "pgvigil-test-server.crt"),
        (key, "pgvigil-test-server.key"),
        (pki.ca(), "pgvigil-test-ca.crt"),
    ] {
        let to = data.join(to);
        std::fs::copy(from, &to).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let hba = data.join("pg_hba.conf");
    let rest = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all {ROLE} 127.0.0.1/32 cert clientcert=verify-full\n\
             host all {ROLE} all reject\n{rest}"
        ),
    )
    .unwrap();
    cluster.psql(
        "postgres",
        &format!(
            "CREATE ROLE {ROLE} LOGIN IN ROLE pg_monitor;
             ALTER SYSTEM SET ssl_cert_file = 'pgvigil-test-server.crt';
             ALTER SYSTEM SET ssl_key_file = 'pgvigil-test-server.key';
             ALTER SYSTEM SET ssl_ca_file = 'pgvigil-test-ca.crt';
             ALTER SYSTEM SET ssl = on;"
        ),
    );
    cluster.restart();
    assert_eq!(cluster.psql("postgres", "SHOW ssl"), "on");
}

#[tokio::test]
async fn targets_log_in_with_a_client_certificate_from_keys_or_the_dsn() {
    let cluster = TestCluster::start_private();
    let pki = Pki::new("pgvigil client-cert CA");
    require_client_certificates(&cluster, &pki);
    let (cert, key) = pki.client("client", ROLE);
    let (other_cert, other_key) = pki.client("someone", "someone_else");
    let port = cluster.port();
    let dsn = |extra: &str| {
        format!("host=localhost port={port} user={ROLE} dbname=postgres sslmode=require {extra}")
    };
    let ca = pki.ca();
    let toml = [
        one_target(
            "keys",
            &dsn(""),
            &format!(
                "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
                ca.display(),
                cert.display(),
                key.display()
            ),
        ),
        one_target(
            "libpq",
            &dsn(&format!(
                "sslrootcert={} sslcert={} sslkey={}",
                ca.display(),
                cert.display(),
                key.display()
            )),
            "",
        ),
        one_target(
            "none",
            &dsn(""),
            &format!("tls_ca_file = \"{}\"", ca.display()),
        ),
        // A valid certificate of the CA, for another user: verify-full refuses it.
        one_target(
            "wrong_cn",
            &dsn(""),
            &format!(
                "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
                ca.display(),
                other_cert.display(),
                other_key.display()
            ),
        ),
    ]
    .concat();
    let daemon = Daemon::start(&toml).await;
    daemon
        .wait_for("keys and libpq up, none and wrong_cn down", WAIT, |m| {
            let up = |t: &str| m.value("pgvigil_up", &[("target", t)]);
            (up("keys")? == 1.0
                && up("libpq")? == 1.0
                && up("none")? == 0.0
                && up("wrong_cn")? == 0.0)
                .then_some(())
        })
        .await;
    // The server says who logged in, over TLS, with which certificate. Two targets logged in,
    // each with its main session and a database session; a database session opens after its
    // main session's first poll, so "up" does not mean both are open: wait for the four.
    let observer = connect(&cluster.dsn("postgres")).await;
    let sessions = wait_async("four pgvigil sessions", WAIT, || {
        let observer = &observer;
        async move {
            let row = observer
                .query_one(
                    "SELECT count(*), coalesce(bool_and(s.ssl), false), coalesce(min(s.client_dn), '') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1 AND a.application_name = 'pgvigil'",
                    &[&ROLE],
                )
                .await
                .unwrap();
            let (count, ssl, dn): (i64, bool, String) = (row.get(0), row.get(1), row.get(2));
            (count >= 4).then(|| format!("{count} {ssl} {dn}"))
        }
    })
    .await;
    assert_eq!(sessions, format!("4 true /CN={ROLE}"));

    // pgvigil_up starts at 0: the refusals asserted are in last_error, so wait for those.
    for (name, expected) in [
        ("none", "set tls_cert_file and tls_key_file"),
        ("wrong_cn", ROLE),
    ] {
        let error = daemon
            .wait_for_target(name, "a connection error", WAIT, |t| {
                t["last_error"].as_str().map(str::to_owned)
            })
            .await;
        assert!(error.contains(expected), "{name}: {error}");
    }
    daemon.stop().await;
}

#[test]
fn client_certificate_settings_are_checked_where_they_are_written() {
    let pki = Pki::new("pgvigil config CA");
    let (cert, key) = pki.client("client", ROLE);
    let (_, other_key) = pki.client("other", ROLE);
    let parse = |extra: &str| {
        pgvigil::Config::parse(
            std::path::Path::new("pgvigil.toml"),
            &format!("[[targets]]\nname = \"a\"\ndsn = \"host=h sslmode=require{extra}"),
            &pgvigil::config::LibpqEnv::default(),
        )
        .map(|c| c.targets[0].connection.tls().clone())
        .map_err(|e| e.to_string())
    };
    let tls = parse(&format!(
        "\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .unwrap();
    assert_eq!(tls.cert_file.as_deref(), Some(cert.as_path()));
    let err = parse(&format!("\"\ntls_cert_file = \"{}\"\n", cert.display())).unwrap_err();
    assert!(
        err.starts_with("pgvigil.toml:4:17: a client certificate needs its private key"),
        "{err}"
    );
    let err = parse(&format!(" sslkey={}\"\n", key.display())).unwrap_err();
    assert!(
        err.starts_with("pgvigil.toml:3:7: a private key needs its certificate"),
        "{err}"
    );
    let err = parse(&format!(
        " sslcert={}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        cert.display(),
        key.display()
    ))
    .unwrap_err();
    assert!(
        err.starts_with("pgvigil.toml:4:17: this key is set, and the DSN names sslcert too"),
        "{err}"
    );
    let err = parse(&format!(
        "\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        other_key.display()
    ))
    .unwrap_err();
    assert!(err.contains("are not a usable pair"), "{err}");
    let err = parse(&format!(
        "\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        key.display(),
        key.display()
    ))
    .unwrap_err();
    assert!(err.contains("holds no PEM certificate"), "{err}");
}
