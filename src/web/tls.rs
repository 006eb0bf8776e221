//! `tls_server_config` as a rustls [`ServerConfig`]: versions, suites, groups, the server
//! certificate, and what is asked of clients.
//!
//! rustls has no verifier for Go's two unverified client-certificate modes
//! (`RequestClientCert`, `RequireAnyClientCert`), so [`AcceptAnyClientCert`] provides them: it
//! checks that the client holds the key of the certificate it sent (the handshake signature)
//! and nothing else, which is what those modes mean. `client_allowed_sans` is checked after the
//! handshake ([`sans_allowed`]).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::config::{ClientAuth, Curve, Pem, TlsServerSettings, TlsVersion};

/// A TLS setting that cannot be used, and the key it is about (to locate it in the file).
#[derive(Debug)]
pub(crate) struct TlsSetupError {
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

fn fail(key: &'static str, message: String) -> TlsSetupError {
    TlsSetupError { key, message }
}

/// Read a PEM source (a file is read now).
fn read(pem: &Pem, key: &'static str) -> Result<Vec<u8>, TlsSetupError> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => std::fs::read(path).map_err(|e| {
            fail(
                key,
                format!(
                    "cannot read {key} {}: {e}; check the path (relative paths are relative to the web config file) and that pgvigil's user may read it",
                    path.display()
                ),
            )
        }),
    }
}

fn certificates(
    pem: &[u8],
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(key, format!("{key} is not a PEM certificate bundle ({e}); it should hold -----BEGIN CERTIFICATE----- blocks")))?;
    if certs.is_empty() {
        return Err(fail(
            key,
            format!(
                "{key} holds no certificate; it should hold -----BEGIN CERTIFICATE----- blocks"
            ),
        ));
    }
    Ok(certs)
}

/// The rustls provider narrowed to the configured suites and groups.
fn provider(settings: &TlsServerSettings) -> Result<CryptoProvider, TlsSetupError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        // TLS 1.3 suites stay (not configurable); TLS 1.2 ones in the configured order.
        let mut suites: Vec<_> = all
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in &settings.cipher_suites {
            if let Some(s) = all
                .iter()
                .find(|s| s.suite().as_str() == Some(name.as_str()))
            {
                suites.push(*s);
            }
        }
        provider.cipher_suites = suites;
    }
    if !settings.curves.is_empty() {
        use rustls::crypto::ring::kx_group;
        provider.kx_groups = settings
            .curves
            .iter()
            .map(|c| match c {
                Curve::X25519 => kx_group::X25519,
                Curve::P256 => kx_group::SECP256R1,
                Curve::P384 => kx_group::SECP384R1,
            })
            .collect();
    }
    Ok(provider)
}

/// Build the server config, reading the certificate, key and client CA now.
pub(crate) fn server_config(settings: &TlsServerSettings) -> Result<ServerConfig, TlsSetupError> {
    let provider = Arc::new(provider(settings)?);
    let cert_key = match settings.cert {
        Pem::File(_) => "cert_file",
        Pem::Inline(_) => "cert",
    };
    let key_key = match settings.key {
        Pem::File(_) => "key_file",
        Pem::Inline(_) => "key",
    };
    let chain = certificates(&read(&settings.cert, cert_key)?, cert_key)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&settings.key, key_key)?).map_err(|e| {
        fail(
            key_key,
            format!("{key_key} holds no usable PEM private key ({e}); it should hold an unencrypted -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY) block"),
        )
    })?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| {
        // rustls has nothing below 1.2: a lower minimum serves from 1.2.
        *v >= settings.min_version.max(TlsVersion::TLS12) && *v <= settings.max_version
    })
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| fail("min_version", format!("the TLS versions, suites and curves configured do not fit together: {e}; with max_version TLS12 keep at least one TLS 1.2 suite in cipher_suites")))?;
    let verifier: Arc<dyn ClientCertVerifier> = match settings.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AcceptAnyClientCert {
                mandatory: settings.client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let (ca, ca_key) = match &settings.client_ca {
                Some(pem @ Pem::File(_)) => (pem, "client_ca_file"),
                Some(pem @ Pem::Inline(_)) => (pem, "client_ca"),
                None => {
                    return Err(fail(
                        "client_auth_type",
                        "client_auth_type verifies client certificates, but there is no client_ca_file".into(),
                    ));
                }
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates(&read(ca, ca_key)?, ca_key)? {
                roots.add(cert).map_err(|e| {
                    fail(
                        ca_key,
                        format!("{ca_key} holds a certificate that cannot be a trust anchor: {e}"),
                    )
                })?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if settings.client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| {
                fail(
                    ca_key,
                    format!("cannot verify client certificates with {ca_key}: {e}"),
                )
            })?
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            fail(
                key_key,
                format!("{cert_key} and {key_key} are not a usable pair: {e}; the key must belong to the first certificate"),
            )
        })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether the client certificate of a finished handshake names one of `allowed` (DNS names
/// and IP addresses, validated at load).
pub(crate) fn sans_allowed(peer: Option<&[CertificateDer<'static>]>, allowed: &[String]) -> bool {
    let Some(leaf) = peer.and_then(|chain| chain.first()) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    allowed.iter().any(|san| {
        ServerName::try_from(san.as_str())
            .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
    })
}

/// Go's `RequestClientCert` / `RequireAnyClientCert`: any certificate, verified only as
/// belonging to the client (the handshake signature).
#[derive(Debug)]
struct AcceptAnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
