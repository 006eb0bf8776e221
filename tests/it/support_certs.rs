//! A throwaway PKI for the TLS tests: one CA, and server and client certificates it signs, made
//! with the real `openssl` CLI. EC P-256 keys: RSA generation would burn the CPU that
//! timing-sensitive tests running beside these need.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgvigil_testkit::find_program;

/// A CA in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

/// Run the `openssl` CLI in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(find_program("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl: {e}; install it (Debian package openssl, or scripts/install-test-deps.sh)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA named `name` (`ca.crt`, `ca.key`).
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
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
                &format!("/CN={name}"),
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
        Pki { dir }
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server certificate for `localhost` and 127.0.0.1: (`<name>.crt`, `<name>.key`).
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(
            name,
            "localhost",
            "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
        )
    }

    /// A client certificate with common name `cn` (PostgreSQL's `cert` method maps it to the
    /// user name): (`<name>.crt`, `<name>.key`).
    pub fn client(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(name, cn, "extendedKeyUsage = clientAuth\n")
    }

    /// A client certificate with common name `cn` and the DNS name `san`.
    pub fn client_with_san(&self, name: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
        self.issue(
            name,
            cn,
            &format!("extendedKeyUsage = clientAuth\nsubjectAltName = DNS:{san}\n"),
        )
    }

    fn issue(&self, name: &str, cn: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n{extensions}"
            ),
        )
        .unwrap();
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
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
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "2",
                "-extfile", &ext, "-out", &crt,
            ],
        );
        (dir.join(crt), dir.join(key))
    }
}
