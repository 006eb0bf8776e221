//! The server-certificate checks of `tls_verify`, shared by the PostgreSQL and PgBouncer
//! connections and (for `insecure_skip_verify`) pgvigil's own HTTP requests.
//!
//! rustls's WebPKI check is stricter than libpq's OpenSSL one in ways that would take working
//! targets down, so these verifiers give back what libpq accepts:
//!
//! - [`NoVerification`] (`tls_verify = "none"`, libpq's `sslmode=require` without a root
//!   certificate): any certificate, but the handshake signature is still checked against it,
//!   so the session is encrypted to whoever holds that certificate's key. The key is read from
//!   the certificate's DER when WebPKI will not parse the certificate (version 1, an unknown
//!   critical extension), as OpenSSL would.
//! - [`Checked`] (`"full"` and `"ca"`): the chain must lead to a trusted root; or the server
//!   presents exactly a certificate of `tls_ca_file` (a self-signed server certificate used as
//!   its own CA, the PostgreSQL manual's simplest setup, which WebPKI refuses as "CA used as end
//!   entity"), within its validity. `"full"` then compares the host name with the
//!   subjectAltName entries, or, when there are none, with the subject's common name as libpq
//!   does (WebPKI ignores the common name).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};

use super::der;

/// The handshake-signature methods of both verifiers: [`handshake_signature`] with their
/// `algorithms`.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            handshake_signature(message, cert, dss, &self.algorithms, false)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            handshake_signature(message, cert, dss, &self.algorithms, true)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// Accepts any server certificate; checks the handshake signature (see the module docs).
#[derive(Debug)]
pub(crate) struct NoVerification {
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// The handshake signature over `message`, by the key of `cert`: rustls's check, or, when
/// WebPKI cannot parse the certificate, the same check against the key read from its DER.
fn handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let checked = if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    };
    let error = match checked {
        Ok(valid) => return Ok(valid),
        Err(error) => error,
    };
    let Some(spki) = der::certificate(cert).map(|c| SubjectPublicKeyInfoDer::from(c.spki)) else {
        return Err(error);
    };
    if tls13 {
        return rustls::crypto::verify_tls13_signature_with_raw_key(
            message, &spki, dss, algorithms,
        )
        .map_err(|_| error);
    }
    let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| error.clone())?;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map_or(&[][..], |(_, algs)| *algs);
    candidates
        .iter()
        .find(|alg| {
            key.verify_signature(**alg, message, dss.signature())
                .is_ok()
        })
        .map(|_| HandshakeSignatureValid::assertion())
        .ok_or(error)
}

/// `tls_verify = "full"` or `"ca"` (see the module docs).
#[derive(Debug)]
pub(crate) struct Checked {
    /// The WebPKI check against the system's roots and `tls_ca_file`; `Err` says why there is
    /// none (no root certificates at all), which fails every handshake, not the setup.
    pub(crate) webpki: Result<Arc<WebPkiServerVerifier>, String>,
    /// The certificates of `tls_ca_file`, accepted as the server's own certificate.
    pub(crate) pinned: Vec<CertificateDer<'static>>,
    /// `"full"`: the host name must match too.
    pub(crate) check_name: bool,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            within_validity(end_entity, now)?;
        } else {
            let webpki = self.webpki.as_ref().map_err(|why| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(NoRoots(why.clone())),
                )))
            })?;
            // webpki checks the chain (and expiry, usage and revocation) before the name, so
            // a name error means everything else held.
            match webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => {}
                other => return other,
            }
        }
        if self.check_name {
            name_matches(end_entity, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Why no certificate can be verified: no root certificate was found.
#[derive(Debug)]
struct NoRoots(String);

impl std::fmt::Display for NoRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoRoots {}

/// A pinned certificate must still be within its validity.
fn within_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (not_before, not_after) = der::certificate(cert)
        .ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?
        .validity;
    let now = now.as_secs();
    if now < not_before {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ))
    } else if now > not_after {
        Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
    } else {
        Ok(())
    }
}

/// Whether `cert` names `server_name`: its subjectAltName entries when it has any (WebPKI's
/// rules), else its common name (libpq's rules: equal ignoring case, or `*.` standing for one
/// leftmost label of a host name).
fn name_matches(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    let mismatch = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
    let fields = der::certificate(cert).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))?;
    if fields.has_alt_names() {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| mismatch.clone())?;
        return parsed
            .verify_is_valid_for_subject_name(server_name)
            .map_err(|_| mismatch);
    }
    let host = match server_name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => return Err(mismatch),
    };
    match fields.common_name() {
        Some(cn) if common_name_matches(&cn, &host) => Ok(()),
        _ => Err(mismatch),
    }
}

fn common_name_matches(cn: &str, host: &str) -> bool {
    if cn.eq_ignore_ascii_case(host) {
        return true;
    }
    // "*.example.com" matches "db.example.com", not "example.com" nor "a.db.example.com".
    match (cn.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty()
                && host.parse::<std::net::IpAddr>().is_err()
                && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::der::tests::{SHA256_RSA, alt_names, certificate_der};

    fn name(host: &str) -> ServerName<'static> {
        ServerName::try_from(host).unwrap().to_owned()
    }

    #[test]
    fn without_alternative_names_the_common_name_is_the_host_name_as_in_libpq() {
        let der = CertificateDer::from(certificate_der(SHA256_RSA, Some("DB.example.com"), None));
        assert!(name_matches(&der, &name("db.example.com")).is_ok());
        assert!(name_matches(&der, &name("other.example.com")).is_err());
        let wildcard =
            CertificateDer::from(certificate_der(SHA256_RSA, Some("*.example.com"), None));
        assert!(name_matches(&wildcard, &name("db.example.com")).is_ok());
        assert!(name_matches(&wildcard, &name("example.com")).is_err());
        assert!(name_matches(&wildcard, &name("a.db.example.com")).is_err());
        let by_ip = CertificateDer::from(certificate_der(SHA256_RSA, Some("10.0.0.5"), None));
        assert!(name_matches(&by_ip, &name("10.0.0.5")).is_ok());
        assert!(name_matches(&by_ip, &name("10.0.0.6")).is_err());
    }

    #[test]
    fn with_alternative_names_the_common_name_is_ignored() {
        // The DER of this test certificate is not one WebPKI parses (no real key): a
        // certificate with alternative names that WebPKI cannot read never matches.
        let der = CertificateDer::from(certificate_der(
            SHA256_RSA,
            Some("db.example.com"),
            Some(alt_names(&[(0x82, b"other.example.com")])),
        ));
        assert!(name_matches(&der, &name("db.example.com")).is_err());
    }

    #[test]
    fn a_pinned_certificate_must_be_within_its_validity() {
        // Valid from 2020-01-01 to 2099-12-31 (see certificate_der).
        let der = CertificateDer::from(certificate_der(SHA256_RSA, Some("db"), None));
        let at = |secs: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        assert!(within_validity(&der, at(1_700_000_000)).is_ok());
        assert!(within_validity(&der, at(1_500_000_000)).is_err());
        assert!(within_validity(&der, at(4_200_000_000)).is_err());
    }
}
