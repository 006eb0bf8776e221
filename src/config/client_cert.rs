//! `tls_cert_file` / `tls_key_file` (or the DSN's `sslcert` / `sslkey`, as libpq reads them):
//! the client certificate a target or PgBouncer session presents, for servers whose
//! `pg_hba.conf` says `hostssl ... cert` or `clientcert=verify-full`.
//!
//! Both or neither: a certificate without its key (or the reverse) is an error, as is the same
//! setting both in the DSN and as a key. The pair is loaded once here, so a wrong path, a file
//! that is not PEM, or a key that does not match its certificate is reported at FILE:LINE:COL;
//! the connector reads the files again at every connect, so a renewed certificate is used
//! without a restart (`src/tls/mod.rs`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::{ConfigError, ConnectionSpec, Validator};

/// Load a certificate and key pair as the TLS layer will: the error names both files and the fix.
fn identity(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            format!(
                "cannot read {what} {}: {e}; check that it exists and that pgvigil's user may read it",
                path.display()
            )
        })
    };
    let cert_pem = read("tls_cert_file", cert)?;
    let key_pem = read("tls_key_file", key)?;
    let provider = rustls::crypto::ring::default_provider();
    pair(cert, key, &cert_pem, &key_pem, &provider)
}

/// The pair in `cert_pem` and `key_pem` (read from `cert` and `key`), checked as a handshake
/// would use it: PEM certificates (the client's first), an unencrypted PEM private key the
/// provider can sign with, and that key belonging to the first certificate.
pub(crate) fn pair(
    cert: &Path,
    key: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let no_certificate = || {
        format!(
            "tls_cert_file {} holds no PEM certificate; it should hold a -----BEGIN CERTIFICATE----- block (the client certificate first, then any intermediates)",
            cert.display()
        )
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", no_certificate()))?;
    if chain.is_empty() {
        return Err(no_certificate());
    }
    let unusable = |e: &dyn std::fmt::Display| {
        format!(
            "tls_cert_file {} and tls_key_file {} are not a usable pair: {e}; the key must be an unencrypted PEM private key (PKCS#8 \"BEGIN PRIVATE KEY\", or \"BEGIN RSA/EC PRIVATE KEY\") that belongs to the certificate",
            cert.display(),
            key.display()
        )
    };
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| unusable(&e))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| unusable(&e))
}

impl Validator<'_> {
    /// Apply `tls_cert_file` / `tls_key_file` to a connection whose DSN (at `dsn`) may have
    /// named `sslcert` / `sslkey` already.
    pub(super) fn client_cert(
        &self,
        connection: &mut ConnectionSpec,
        cert_key: &Option<Spanned<String>>,
        key_key: &Option<Spanned<String>>,
        dsn: Option<Range<usize>>,
    ) -> Result<(), ConfigError> {
        let mut tls = connection.tls().clone();
        for (key, slot, dsn_name) in [
            (cert_key, &mut tls.cert_file, "sslcert"),
            (key_key, &mut tls.key_file, "sslkey"),
        ] {
            if let Some(value) = key {
                if slot.is_some() {
                    return Err(self.err(
                        value,
                        format!(
                            "this key is set, and the DSN names {dsn_name} too; keep one of them"
                        ),
                    ));
                }
                if value.get_ref().is_empty() {
                    return Err(
                        self.err(value, "empty path; name a PEM file, or leave the key out")
                    );
                }
                *slot = Some(PathBuf::from(value.get_ref()));
            }
        }
        let at = |span: Option<Range<usize>>, message: String| {
            ConfigError::at(self.path, self.text, span.or_else(|| dsn.clone()), message)
        };
        let span_of = |k: &Option<Spanned<String>>| k.as_ref().map(|k| k.span());
        match (&tls.cert_file, &tls.key_file) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(at(
                    span_of(cert_key),
                    "a client certificate needs its private key: add tls_key_file = \"/path/client.key\" (or sslkey in the DSN)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(at(
                    span_of(key_key),
                    "a private key needs its certificate: add tls_cert_file = \"/path/client.crt\" (or sslcert in the DSN)".into(),
                ));
            }
            (Some(cert), Some(key)) => {
                identity(cert, key).map_err(|e| at(span_of(cert_key), e))?;
            }
        }
        connection.set_tls(tls);
        Ok(())
    }
}
