//! The TLS connector of one target or PgBouncer: built once, rebuilt only when its CA bundle
//! changes on disk, and the fix spelled out when a handshake fails.
//!
//! The handshake itself is rustls ([`postgres`]: tokio-postgres's hooks, [`verify`]: the
//! `tls_verify` modes as libpq checks them, [`binding`]: SCRAM channel binding, [`der`]: the
//! certificate fields those read).
//!
//! # What is trusted
//!
//! `tls_verify = "full"` and `"ca"` trust the system's roots (rustls-native-certs:
//! `/etc/ssl/certs` on Debian, or `SSL_CERT_FILE` / `SSL_CERT_DIR`) and the certificates of
//! `tls_ca_file` (or `sslrootcert`) besides them, as the README says. `"none"` (the default
//! without a CA file, as libpq's `sslmode=require`) reads no roots at all.
//!
//! # Memory: one client config per distinct TLS setup, not per source
//!
//! A client config holds its parsed roots (the system bundle is ~150 certificates). A fleet of
//! 500 targets with the same TLS settings would hold 500 identical copies. So built configs
//! are shared process-wide ([`SHARED`]): a source whose settings and file contents equal
//! another's reuses its config (a reference count). An entry lives as long as a source uses it
//! (the map holds weak references), so a rotated CA bundle or a removed source frees it.

pub(crate) mod binding;
pub(crate) mod der;
pub(crate) mod postgres;
pub(crate) mod verify;

use std::sync::{Arc, Mutex, Weak};

use rustls::client::WebPkiServerVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode;

use crate::config::{ConnectionSpec, TlsConfig, TlsVerify};
use crate::config::{client_identity, tls_ca_certificates};
pub(crate) use postgres::MakeRustls;
use verify::{Checked, NoVerification};

/// Hands out the connector for a connection's `tls_ca_file` / `tls_verify`.
pub(crate) struct Connector {
    config: TlsConfig,
    /// The files' bytes the cached connector was built from.
    cached: Mutex<Option<(Files, Arc<ClientConfig>)>>,
}

/// A built connector, by the settings and file contents it was built from.
type SharedEntry = (TlsConfig, Files, Weak<ClientConfig>);

/// Every connector some source still holds (see the module docs); entries whose last holder
/// is gone are pruned when one is added.
static SHARED: Mutex<Vec<SharedEntry>> = Mutex::new(Vec::new());

/// The bytes of a connection's TLS files as read for one connect (empty when not configured).
#[derive(Clone, PartialEq, Eq)]
struct Files {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub(crate) fn new(spec: &ConnectionSpec) -> Self {
        Connector {
            config: spec.tls().clone(),
            cached: Mutex::new(None),
        }
    }

    /// The connector to connect with now. The CA bundle and the client certificate and key
    /// are read at every connect so rotated files are used without a restart; the connector
    /// is rebuilt only if one of them changed.
    pub(crate) fn get(&self) -> Result<MakeRustls, String> {
        let read = |key: &str, path: &Option<std::path::PathBuf>| {
            match path {
            Some(path) => std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read {key} {}: {e}; check that it exists and that pgvigil's user may read it",
                    path.display()
                )
            }),
            None => Ok(Vec::new()),
        }
        };
        let files = Files {
            ca: read("tls_ca_file", &self.config.ca_file)?,
            cert: read("tls_cert_file", &self.config.cert_file)?,
            key: read("tls_key_file", &self.config.key_file)?,
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((built_from, connector)) = cached.as_ref() {
            if *built_from == files {
                return Ok(MakeRustls(connector.clone()));
            }
        }
        let connector = self.shared(&files)?;
        let handed_out = MakeRustls(connector.clone());
        *cached = Some((files, connector));
        Ok(handed_out)
    }

    /// The connector another source built from the same settings and files, or a new one
    /// (then offered to the others).
    fn shared(&self, files: &Files) -> Result<Arc<ClientConfig>, String> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let found = shared
            .iter()
            .filter(|(config, built_from, _)| *config == self.config && built_from == files)
            .find_map(|(_, _, connector)| connector.upgrade());
        if let Some(connector) = found {
            return Ok(connector);
        }
        let connector = Arc::new(self.build(files)?);
        shared.retain(|(_, _, c)| c.strong_count() > 0);
        shared.push((
            self.config.clone(),
            files.clone(),
            Arc::downgrade(&connector),
        ));
        Ok(connector)
    }

    fn build(&self, files: &Files) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let algorithms = provider.signature_verification_algorithms;
        let builder = match self.config.verify {
            TlsVerify::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification { algorithms })),
            verify => {
                let pinned = match &self.config.ca_file {
                    Some(path) => tls_ca_certificates(path, &files.ca)?,
                    None => Vec::new(),
                };
                let webpki = roots(&pinned).and_then(|roots| {
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("cannot set up TLS verification: {e}"))
                });
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Checked {
                        webpki,
                        pinned,
                        check_name: verify == TlsVerify::Full,
                        algorithms,
                    }))
            }
        };
        let mut config = match (&self.config.cert_file, &self.config.key_file) {
            (Some(cert), Some(key)) => {
                // Checked once here (the key belongs to the certificate), not again by
                // `with_client_auth_cert`.
                let identity = client_identity(cert, key, &files.cert, &files.key, &provider)?;
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
            }
            _ => builder.with_no_client_auth(),
        };
        // As libpq ≥ 17 does; PostgreSQL 17's direct TLS negotiation requires it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }
}

/// The roots `tls_verify = "full"` and `"ca"` check against (see the module docs): the
/// system's and `ca_certs`. `Err` when there are none: then every handshake fails with
/// that reason, while connections without TLS (`sslmode=disable`, Unix sockets) work.
fn roots(ca_certs: &[rustls_pki_types::CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    // A broken file in the system bundle must not take the others down.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    // Checked at load (config::tls): each parses as a trust anchor.
    roots.add_parsable_certificates(ca_certs.iter().cloned());
    if roots.is_empty() {
        return Err(format!(
            "no trusted root certificate: none on this system ({}) and no tls_ca_file; install ca-certificates, point SSL_CERT_FILE at a bundle, or set tls_ca_file",
            native
                .errors
                .first()
                .map_or_else(|| "the bundle is empty".to_owned(), |e| e.to_string())
        ));
    }
    Ok(roots)
}

/// A connection error, with the fix when it is about TLS.
pub(crate) fn explain(spec: &ConnectionSpec, text: String) -> String {
    let hint = if text.contains("hostname mismatch") || text.contains("IP address mismatch") {
        "; the server's certificate does not name the host in the DSN: connect by a name the certificate lists, or set tls_verify = \"ca\" to check the certificate chain only (for IP addresses and aliases)"
    } else if text.contains("UnsupportedCertVersion") {
        "; the server's certificate is X.509 version 1 (no extensions), which pgvigil verifies only as a certificate of tls_ca_file itself: reissue it with extensions (openssl x509 -req ... -extfile with subjectAltName), put the server's certificate in tls_ca_file, or set tls_verify = \"none\" to encrypt without verifying"
    } else if text.contains("certificate verify failed") {
        "; the server's certificate is not signed by a CA pgvigil trusts: set tls_ca_file to the server's CA bundle (e.g. the RDS CA bundle), or tls_verify = \"ca\" if you connect by IP, or tls_verify = \"none\" to encrypt without verifying"
    } else if text.contains("server does not support TLS") {
        "; the server has ssl = off: enable ssl on the server, or drop sslmode=require from the DSN"
    } else if text.contains("certificate")
        && (text.contains("28000")
            || text.contains("connection requires a valid client certificate"))
    {
        "; the server demands a client certificate (pg_hba.conf `cert` or clientcert=verify-full): set tls_cert_file and tls_key_file (or sslcert/sslkey in the DSN) to a certificate the server's ssl_ca_file trusts, whose CN is the user name"
    } else if text.contains("no hostname provided for TLS") {
        "; TLS needs a TCP host, not a Unix socket: put a host name in the DSN, or drop sslmode=require"
    } else {
        ""
    };
    // Under prefer the user may not know TLS was attempted at all.
    let prefer = if text.contains("TLS handshake") && spec.ssl_mode() == SslMode::Prefer {
        "; TLS was tried because the server offers it and the DSN's sslmode is prefer (the default): fix the TLS setup, or set sslmode=disable to connect without TLS"
    } else {
        ""
    };
    format!("{text}{hint}{prefer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LibpqEnv;

    const VERIFY_FAILED: &str = "error performing TLS handshake: certificate verify failed: invalid peer certificate: UnknownIssuer";

    fn spec(dsn: &str) -> ConnectionSpec {
        ConnectionSpec::parse(dsn, &LibpqEnv::default()).unwrap()
    }

    #[test]
    fn an_untrusted_certificate_names_the_keys_that_fix_it() {
        let text = explain(&spec("host=db sslmode=require"), VERIFY_FAILED.into());
        assert!(text.starts_with(VERIFY_FAILED), "{text}");
        assert!(text.contains("set tls_ca_file"), "{text}");
        assert!(!text.contains("sslmode=disable"), "{text}");
        // Under the default sslmode, also say that TLS was the server's offer.
        let text = explain(&spec("host=db"), VERIFY_FAILED.into());
        assert!(text.contains("set sslmode=disable"), "{text}");
    }

    #[test]
    fn a_hostname_mismatch_suggests_verify_ca() {
        let text = explain(
            &spec("host=10.0.0.5 sslmode=require"),
            "error performing TLS handshake: certificate verify failed: invalid peer certificate: NotValidForName (hostname mismatch)".into(),
        );
        assert!(text.contains("tls_verify = \"ca\""), "{text}");
    }

    #[test]
    fn other_errors_are_left_alone() {
        let text = "db error: FATAL (28P01): password authentication failed";
        assert_eq!(explain(&spec("host=db"), text.into()), text);
    }

    fn held(connector: &Connector) -> Arc<ClientConfig> {
        let cached = connector.cached.lock().unwrap();
        cached
            .as_ref()
            .expect("get() caches its connector")
            .1
            .clone()
    }

    #[test]
    fn sources_with_the_same_tls_settings_share_one_client_config() {
        let with = |host: &str, verify: TlsVerify| {
            let mut spec = spec(&format!("host={host} sslmode=require"));
            spec.set_tls(TlsConfig {
                verify,
                ..TlsConfig::default()
            });
            Connector::new(&spec)
        };
        // Verify modes no other test of this process builds, so the shared entries are ours.
        let a = with("db1", TlsVerify::None);
        let b = with("db2", TlsVerify::None);
        let other = with("db3", TlsVerify::Ca);
        for c in [&a, &b, &other] {
            c.get().unwrap();
        }
        assert!(
            Arc::ptr_eq(&held(&a), &held(&b)),
            "same settings: one config"
        );
        assert!(
            !Arc::ptr_eq(&held(&a), &held(&other)),
            "other settings: their own"
        );
        // Once no source holds it, the config is freed and the next source builds anew.
        let weak = Arc::downgrade(&held(&a));
        drop((a, b));
        assert_eq!(
            weak.strong_count(),
            0,
            "the shared map must not keep it alive"
        );
        let c = with("db4", TlsVerify::None);
        c.get().unwrap();
        assert!(weak.upgrade().is_none());
        // Held by `c` alone (and the clone `held` hands back).
        assert_eq!(Arc::strong_count(&held(&c)), 2);
    }
}
