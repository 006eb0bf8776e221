//! `tls_ca_file` / `tls_verify`: how a target's or PgBouncer's TLS session is checked.
//!
//! Whether TLS is used at all is the DSN's `sslmode` (`disable`, `prefer` — the default —,
//! `require`), exactly as tokio-postgres reads it; these keys say what a TLS session must prove.
//!
//! Without `tls_verify`, pgvigil does what libpq does for the same DSN: `prefer` and `require`
//! encrypt without checking the certificate (so `pgvigil` alone works against a local server
//! with Debian's self-signed "snakeoil" certificate, as `psql` does), and naming a
//! `tls_ca_file` turns full verification on. Set `tls_verify = "full"` to insist on it.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use toml::Spanned;

use super::{ConfigError, ConnectionSpec, Validator};

/// How much of the server's certificate is checked once TLS is negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVerify {
    /// Chain up to a trusted CA, and the certificate names the host connected to.
    #[default]
    Full,
    /// Chain only: for connecting by IP address or an alias the certificate does not name.
    Ca,
    /// Encrypt without verifying (libpq's `sslmode=require`): open to a man in the middle.
    None,
}

impl TlsVerify {
    const CHOICES: &[(&str, TlsVerify)] = &[
        ("full", TlsVerify::Full),
        ("ca", TlsVerify::Ca),
        ("none", TlsVerify::None),
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVerify::Full => "full",
            TlsVerify::Ca => "ca",
            TlsVerify::None => "none",
        }
    }
}

/// The TLS settings of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// A PEM bundle trusted in addition to the system's roots; read at every connect, so a
    /// rotated bundle is picked up without a restart.
    pub ca_file: Option<PathBuf>,
    /// What the server's certificate must prove.
    pub verify: TlsVerify,
    /// A client certificate (PEM, the chain after it) presented to the server: `tls_cert_file`
    /// or the DSN's `sslcert`. Read at every connect, like the CA bundle.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, or the traditional RSA/EC forms): `tls_key_file` or
    /// the DSN's `sslkey`.
    pub key_file: Option<PathBuf>,
}

/// Read a CA bundle and check that it holds at least one PEM certificate.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read tls_ca_file {}: {e}; check that it exists and that pgvigil's user may read it",
            path.display()
        )
    })?;
    ca_certificates(path, &pem)
}

/// The certificates of a CA bundle `pem` read from `path`; at least one.
pub(crate) fn ca_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "tls_ca_file {} is not a PEM certificate bundle: {e}; it should hold -----BEGIN CERTIFICATE----- blocks",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "tls_ca_file {} holds no certificate; it should hold -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        webpki::anchor_from_trusted_cert(cert).map_err(|e| {
            format!(
                "certificate {} of tls_ca_file {} cannot be read as a CA certificate ({e}); the file should hold PEM certificates as the server's CA issued them",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(certs)
}

impl Validator<'_> {
    /// Apply `tls_ca_file` / `tls_verify` to a connection.
    pub(super) fn tls(
        &self,
        connection: &mut ConnectionSpec,
        ca_file: &Option<Spanned<String>>,
        verify: &Option<Spanned<String>>,
    ) -> Result<(), ConfigError> {
        // The DSN's sslcert / sslkey / sslrootcert are already in.
        let mut tls = connection.tls().clone();
        if let Some(file) = ca_file {
            if tls.ca_file.is_some() {
                return Err(self.err(
                    file,
                    "tls_ca_file is set, and the DSN names sslrootcert too; keep one of them",
                ));
            }
            tls.ca_file = Some(PathBuf::from(file.get_ref()));
        }
        if let Some(path) = &tls.ca_file {
            read_ca_file(path).map_err(|e| match ca_file {
                Some(file) => self.err(file, e),
                None => {
                    ConfigError::at(self.path, self.text, None, format!("DSN sslrootcert: {e}"))
                }
            })?;
        }
        tls.verify = if tls.ca_file.is_some() {
            TlsVerify::Full
        } else {
            TlsVerify::None
        };
        if let Some(value) = verify {
            tls.verify = TlsVerify::CHOICES
                .iter()
                .find(|(name, _)| *name == value.get_ref())
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    self.err(
                        value,
                        format!(
                            "invalid tls_verify \"{}\"; use \"full\" (certificate chain and host name), \"ca\" (chain only, for IP addresses or aliases) or \"none\" (encrypt without verifying)",
                            value.get_ref()
                        ),
                    )
                })?;
        }
        connection.set_tls(tls);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::TlsVerify;
    use crate::config::{Config, LibpqEnv};

    fn verify_of(extra: &str) -> TlsVerify {
        let text = format!("[[targets]]\nname = \"a\"\ndsn = \"host=db\"\n{extra}\n");
        let config = Config::parse(Path::new("pgvigil.toml"), &text, &LibpqEnv::default())
            .unwrap_or_else(|e| panic!("{e}"));
        config.targets[0].connection.tls().verify
    }

    #[test]
    fn the_default_follows_libpq_and_a_ca_file_turns_verification_on() {
        assert_eq!(verify_of(""), TlsVerify::None);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        // Any well-formed certificate will do for loading; this one is self-signed test data.
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", "/CN=test", "-days", "1", "-keyout"])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(&ca)
            .status()
            .expect("openssl (install it with scripts/install-test-deps.sh)");
        assert!(status.success());
        let ca = ca.display();
        assert_eq!(
            verify_of(&format!("tls_ca_file = \"{ca}\"")),
            TlsVerify::Full
        );
        assert_eq!(
            verify_of(&format!("tls_ca_file = \"{ca}\"\ntls_verify = \"ca\"")),
            TlsVerify::Ca
        );
        assert_eq!(verify_of("tls_verify = \"full\""), TlsVerify::Full);
    }
}
