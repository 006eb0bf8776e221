//! TLS for pgvigil's own HTTP requests (Alertmanager and webhook receivers): rustls with the
//! system's roots plus an optional CA bundle, an optional client certificate, and certificate
//! checks off only when `insecure_skip_verify = true` says so.
//!
//! The roots are read once per receiver when its delivery task starts (rustls-native-certs:
//! the system's bundle, e.g. /etc/ssl/certs on Debian, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::SinkTlsConfig;
use crate::tls::verify::NoVerification;

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {key} {}: {e}; check that it exists and that pgvigil's user may read it",
            path.display()
        )
    })
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&read(path, key)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{key} {} is not a PEM certificate bundle ({e})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {} holds no certificate; it should hold -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls client config for `tls`: every file is read (and checked) now.
pub fn client_config(tls: &SinkTlsConfig) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification {
                algorithms: provider.signature_verification_algorithms,
            }))
    } else {
        let mut roots = RootCertStore::empty();
        // A broken file in the system bundle must not take the others down.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &tls.ca_file {
            for cert in certificates(ca, "ca_file")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "ca_file {} holds a certificate that cannot be trusted: {e}",
                        ca.display()
                    )
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "cert_file")?;
            let private = PrivateKeyDer::from_pem_slice(&read(key, "key_file")?).map_err(|e| {
                format!("key_file {} holds no usable PEM private key ({e}); it should hold an unencrypted PRIVATE KEY block", key.display())
            })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "cert_file {} and key_file {} are not a usable pair: {e}; the key must belong to the first certificate",
                    cert.display(),
                    key.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}
