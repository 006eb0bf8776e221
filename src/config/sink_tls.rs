//! `tls_config` of an `[[alerts.alertmanager]]` or `[[alerts.webhook]]` receiver, shaped like
//! Prometheus's and Alertmanager's own `tls_config`: `ca_file` (trusted besides the system's
//! roots), `cert_file` + `key_file` (a client certificate), `insecure_skip_verify`.
//!
//! Checked at load by building the TLS client config the delivery task will use, so a missing
//! file, a key that is not the certificate's, or `tls_config` on an `http://` URL is an error at
//! its FILE:LINE:COL.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

/// The keys as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSinkTls {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    insecure_skip_verify: Option<bool>,
}

/// How a receiver's HTTPS is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkTlsConfig {
    /// PEM CA bundle trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM, unencrypted).
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate: encrypted, but open to a man in the middle.
    pub insecure_skip_verify: bool,
}

impl Validator<'_> {
    pub(super) fn sink_tls(
        &self,
        url: &str,
        raw: &Option<Spanned<RawSinkTls>>,
    ) -> Result<SinkTlsConfig, ConfigError> {
        let Some(spanned) = raw else {
            return Ok(SinkTlsConfig::default());
        };
        let r = spanned.get_ref();
        if !url.starts_with("https://") {
            return Err(self.err(
                spanned,
                format!("tls_config applies to https:// receivers, and \"{url}\" is http://; write https://, or remove tls_config"),
            ));
        }
        let tls = SinkTlsConfig {
            ca_file: r.ca_file.as_ref().map(PathBuf::from),
            cert_file: r.cert_file.as_ref().map(PathBuf::from),
            key_file: r.key_file.as_ref().map(PathBuf::from),
            insecure_skip_verify: r.insecure_skip_verify.unwrap_or(false),
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(self.err(
                spanned,
                "tls_config needs both cert_file and key_file for a client certificate, or neither",
            ));
        }
        if tls.insecure_skip_verify && tls.ca_file.is_some() {
            return Err(self.err(
                spanned,
                "tls_config sets ca_file and insecure_skip_verify = true; with insecure_skip_verify nothing is verified, so drop one of them (keep ca_file to verify)",
            ));
        }
        crate::web::client::client_config(&tls)
            .map_err(|e| self.err(spanned, format!("tls_config: {e}")))?;
        Ok(tls)
    }
}
