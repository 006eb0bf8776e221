//! tokio-postgres's TLS hooks ([`MakeTlsConnect`], [`TlsConnect`], [`TlsStream`]) over rustls,
//! for targets and PgBouncer: one [`ClientConfig`] per distinct TLS setup (see the parent
//! module), a handshake per connection, SCRAM channel binding from the server's certificate,
//! and rustls's errors said in the words the fixes are keyed on.
//!
//! Why rustls and not OpenSSL: pgvigil's HTTP side (the HTTPS endpoint, Alertmanager and
//! webhook delivery) already used it, and linking OpenSSL as well cost every daemon ~4.4 MB of
//! resident library code plus an `SSL_CTX` per TLS setup (issue 15's memory targets). What
//! rustls does not do that OpenSSL did: TLS 1.0 and 1.1, and TLS 1.2 without ECDHE and an
//! AEAD cipher. PostgreSQL servers built with OpenSSL ≥ 1.0.1 offer TLS 1.2 with such suites
//! by default; the handshake error says so when a server does not.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::{AlertDescription, CertificateError, ClientConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::binding;

/// What `Config::connect` and `CancelToken::cancel_query` take: a shared client config.
#[derive(Clone, Debug)]
pub(crate) struct MakeRustls(pub(super) Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    /// Called for every connection, also over a Unix socket (`domain` empty) where TLS is
    /// never started: the name is checked only when a handshake begins.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsError> {
        Ok(RustlsConnect {
            config: self.0.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's handshake, to `domain`.
#[derive(Debug)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    domain: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.domain.as_str())
                .map_err(|_| {
                    TlsError(format!(
                        "\"{}\" is neither a host name nor an IP address, so its certificate cannot be checked; put the server's host name in the DSN",
                        self.domain
                    ))
                })?
                .to_owned();
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await
                .map_err(|e| TlsError(describe(&e)))?;
            Ok(RustlsStream(stream))
        })
    }
}

/// An encrypted session's stream.
#[derive(Debug)]
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A TLS 1.3 server that refuses the client certificate says so after the handshake,
        // in an alert read here.
        Pin::new(&mut self.0).poll_read(cx, buf).map_err(readable)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf).map_err(readable)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0)
            .poll_write_vectored(cx, bufs)
            .map_err(readable)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(readable)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, connection) = self.0.get_ref();
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| binding::tls_server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// A TLS failure, in the words [`super::explain`] and the user act on.
#[derive(Debug)]
pub(crate) struct TlsError(String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// `e` with a rustls error inside it said as [`describe`] says it.
fn readable(e: io::Error) -> io::Error {
    if rustls_error(&e).is_some() {
        io::Error::new(e.kind(), describe(&e))
    } else {
        e
    }
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// What went wrong in a handshake or a read. Certificate failures start with "certificate
/// verify failed" (and a name mismatch ends with "(hostname mismatch)"), as OpenSSL's did: the
/// hints of [`super::explain`] are keyed on those words.
fn describe(e: &io::Error) -> String {
    let Some(tls) = rustls_error(e) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("certificate verify failed: {tls} (hostname mismatch)"),
        // webpki's own reasons (CaUsedAsEndEntity, UnsupportedCertVersion, ...) and no roots.
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("certificate verify failed: {other}")
        }
        rustls::Error::InvalidCertificate(_) => format!("certificate verify failed: {tls}"),
        rustls::Error::AlertReceived(alert) => {
            let text = format!(
                "the server ended the TLS session with alert \"{}\"",
                words(&format!("{alert:?}"))
            );
            match alert {
                AlertDescription::HandshakeFailure
                | AlertDescription::ProtocolVersion
                | AlertDescription::InsufficientSecurity => format!("{text}; {NO_COMMON_SUITE}"),
                _ => text,
            }
        }
        rustls::Error::PeerIncompatible(_) => format!("{tls}; {NO_COMMON_SUITE}"),
        _ => tls.to_string(),
    }
}

/// What a handshake that found no common version or cipher suite needs.
const NO_COMMON_SUITE: &str = "pgvigil speaks TLS 1.2 (with ECDHE and an AES-GCM or ChaCha20 cipher) and 1.3: check the server's ssl_min_protocol_version and ssl_ciphers (a TLS 1.2 server that demands a client certificate also ends the handshake this way: then set tls_cert_file and tls_key_file)";

/// `CertificateRequired` → "certificate required", `UnknownCA` → "unknown ca".
fn words(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    let mut previous_lower = false;
    for c in camel.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push(' ');
        }
        previous_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn certificate_failures_say_certificate_verify_failed_and_name_mismatches_say_so() {
        let text = describe(&wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert!(text.starts_with("certificate verify failed: "), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(!text.contains("hostname mismatch"), "{text}");
        let text = describe(&wrapped(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        )));
        assert!(text.starts_with("certificate verify failed: "), "{text}");
        assert!(text.ends_with("(hostname mismatch)"), "{text}");
    }

    #[test]
    fn alerts_are_said_in_words_and_other_errors_are_left_alone() {
        let text = readable(wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        )));
        assert_eq!(text.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            text.to_string(),
            "the server ended the TLS session with alert \"certificate required\""
        );
        assert_eq!(words("UnknownCA"), "unknown ca");
        let text = describe(&wrapped(rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure,
        )));
        assert!(
            text.contains("\"handshake failure\"; pgvigil speaks TLS 1.2"),
            "{text}"
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(readable(reset).to_string(), "reset by peer");
        let text = describe(&wrapped(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        )));
        assert!(text.contains("ssl_min_protocol_version"), "{text}");
    }
}
