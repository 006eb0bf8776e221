//! PgBouncer's client TLS with certificate authentication: the admin console admits pgvigil
//! only over TLS with a client certificate whose CN is the user (`auth_type = cert`).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use pgvigil_testkit::{TestCluster, TestPgbouncer};

use crate::support::Daemon;
use crate::support_certs::Pki;

const WAIT: Duration = crate::support::CEILING;

/// Make `path` readable by PgBouncer, which drops to the `postgres` user when tests run as root.
fn hand_to_postgres(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g"))).unwrap();
    }
}

#[tokio::test]
async fn the_admin_console_is_reached_over_tls_with_a_client_certificate() {
    let cluster = TestCluster::start();
    let pki = Pki::new("pgvigil pgbouncer CA");
    let (crt, key) = pki.server("bouncer");
    let user = cluster.superuser();
    let (client_crt, client_key) = pki.client("pgvigil", &user);
    let (stranger_crt, stranger_key) = pki.client("stranger", "someone_else");
    for (file, mode) in [(&crt, 0o644), (&key, 0o600), (&pki.ca(), 0o644)] {
        hand_to_postgres(file, mode);
    }
    // PgBouncer opens the files as postgres: the directory must let it in.
    hand_to_postgres(crt.parent().unwrap(), 0o755);
    let bouncer = TestPgbouncer::start_with(
        &cluster,
        2,
        &format!(
            "auth_type = cert\nclient_tls_sslmode = verify-full\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nclient_tls_ca_file = {}",
            crt.display(),
            key.display(),
            pki.ca().display()
        ),
    );
    let entry = |name: &str, cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "[[pgbouncers]]\nname = \"{name}\"\ndsn = \"host=localhost port={} user={user} dbname=pgbouncer sslmode=require\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            bouncer.port(),
            pki.ca().display(),
            cert.display(),
            key.display()
        )
    };
    let toml = format!(
        "{}{}[[pgbouncers]]\nname = \"no-cert\"\ndsn = \"host=localhost port={} user={user} dbname=pgbouncer sslmode=require\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\ntls_ca_file = \"{}\"\n",
        entry("with-cert", &client_crt, &client_key),
        entry("wrong-cn", &stranger_crt, &stranger_key),
        bouncer.port(),
        pki.ca().display()
    );
    let daemon = Daemon::start(&toml).await;
    daemon
        .wait_for(
            "the console polled over TLS with the certificate",
            WAIT,
            |m| {
                (m.value("pgvigil_up", &[("target", "with-cert")])? == 1.0
                    && m.matching("pgvigil_pgbouncer_info", &[("target", "with-cert")])
                        .next()
                        .is_some())
                .then_some(())
            },
        )
        .await;
    let (_, targets) = daemon.get("/api/v1/targets").await;
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let with_cert = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "with-cert")
        .unwrap();
    assert_eq!(with_cert["tls"], true, "{with_cert}");
    // Without a certificate, or with another user's, PgBouncer refuses the login.
    for (name, why) in [
        // TLS 1.3 sends the alert after the handshake: the client sees it, or the reset
        // that follows it when it writes first.
        ("no-cert", "certificate required|reset by peer"),
        ("wrong-cn", "certificate authentication failed"),
    ] {
        let error = daemon
            .wait_for_target(name, "the refused login", WAIT, |t| {
                t["last_error"].as_str().map(str::to_owned)
            })
            .await;
        assert_eq!(
            daemon
                .metrics()
                .await
                .value("pgvigil_up", &[("target", name)]),
            Some(0.0),
            "{name}: {error}"
        );
        assert!(why.split('|').any(|w| error.contains(w)), "{name}: {error}");
    }
    daemon.stop().await;
}
