//! `web-config.yml`, the Prometheus exporter-toolkit format, read into a [`WebConfig`].
//!
//! The same file and the same meaning as for node_exporter and postgres_exporter
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>):
//! `tls_server_config`, `http_server_config` and `basic_auth_users`, plus `rate_limit`. Unknown
//! keys are errors, as exporter-toolkit's strict YAML decoding makes them; every error names the
//! file, the line and the column. Relative file names are relative to the file's directory,
//! as in exporter-toolkit.
//!
//! Where rustls and Go's `crypto/tls` differ, the difference is spelled out:
//!
//! * rustls implements TLS 1.2 and 1.3 only: a `min_version` of `TLS10` or `TLS11` serves from
//!   TLS 1.2 (clients that old cannot connect); a `max_version` below TLS12 is an error.
//! * `cipher_suites` takes Go's names; the TLS 1.2 suites rustls has are the ECDHE AEAD ones
//!   (others are errors that list those), TLS 1.3 suites are not configurable in either.
//! * `curve_preferences`: `X25519`, `CurveP256`, `CurveP384` (`CurveP521` is not in rustls).
//! * `client_allowed_sans` matches DNS names and IP addresses (not e-mail or URI SANs).
//! * `http2` is accepted; pgvigil serves HTTP/1.1 (a JSON and text API needs nothing more).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a web config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the web config file: {source}; check the path (--web.config.file or [server] web_config_file) and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something in the file is wrong.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, and the fix.
        message: String,
    },
}

/// Where PEM data comes from: a file (re-read when it changes) or the YAML itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// `cert_file`, `key_file`, `client_ca_file`: resolved against the config's directory.
    File(PathBuf),
    /// `cert`, `key`, `client_ca`: the PEM text inline.
    Inline(String),
}

/// `client_auth_type`, as Go's `tls.ClientAuthType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified (insecure: any certificate passes).
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    /// Verified against `client_ca_file` when sent.
    VerifyClientCertIfGiven,
    /// Required and verified against `client_ca_file`: the one secure client-certificate mode.
    RequireAndVerifyClientCert,
}

/// `min_version` / `max_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.0 (not in rustls).
    TLS10,
    /// TLS 1.1 (not in rustls).
    TLS11,
    /// TLS 1.2.
    TLS12,
    /// TLS 1.3.
    TLS13,
}

/// `curve_preferences` entries rustls has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// `X25519`
    X25519,
    /// `CurveP256`
    P256,
    /// `CurveP384`
    P384,
}

/// `tls_server_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerSettings {
    /// The server certificate chain.
    pub cert: Pem,
    /// Its key.
    pub key: Pem,
    /// CAs that client certificates must chain to.
    pub client_ca: Option<Pem>,
    /// What is asked of clients.
    pub client_auth: ClientAuth,
    /// Lowest protocol version offered (at least TLS 1.2 in practice).
    pub min_version: TlsVersion,
    /// Highest protocol version offered.
    pub max_version: TlsVersion,
    /// TLS 1.2 suites, Go names, in preference order; empty = rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// The server's suite order wins (default, as in exporter-toolkit).
    pub prefer_server_cipher_suites: bool,
    /// Key-exchange groups in preference order; empty = rustls's defaults.
    pub curves: Vec<Curve>,
    /// A client certificate must name one of these (DNS names or IP addresses).
    pub client_allowed_sans: Option<Vec<String>>,
}

/// `rate_limit`: a token bucket over all requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// One token per interval.
    pub interval: Duration,
    /// Bucket size.
    pub burst: u32,
}

/// A validated web config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// HTTPS, when `tls_server_config` names a certificate.
    pub tls: Option<TlsServerSettings>,
    /// `http_server_config.headers`, added to every response.
    pub headers: BTreeMap<String, String>,
    /// `http_server_config.http2` (accepted; pgvigil serves HTTP/1.1).
    pub http2: bool,
    /// `basic_auth_users`: user name to bcrypt hash. Empty = no authentication.
    pub users: BTreeMap<String, String>,
    /// `rate_limit`, when its interval is not zero.
    pub rate_limit: Option<RateLimit>,
}

// --- the file as written ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    cipher_suites: Option<Vec<CipherName>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<CurveName>>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, HeaderValueText>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<GoDuration>,
    burst: Option<u32>,
}

/// `client_auth_type`, where an empty string means the default as in exporter-toolkit.
fn client_auth(name: &str) -> Result<ClientAuth, String> {
    Ok(match name {
        "" | "NoClientCert" => ClientAuth::NoClientCert,
        "RequestClientCert" => ClientAuth::RequestClientCert,
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        other => {
            return Err(format!(
                "client_auth_type \"{other}\" is not a client auth type; use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (the one that verifies client certificates)"
            ));
        }
    })
}

/// A cipher suite name, checked against what rustls implements.
#[derive(Debug)]
struct CipherName(Option<String>);

/// Go's TLS 1.2 names rustls (ring) implements, with Go's older aliases.
pub(super) const TLS12_SUITES: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Go's TLS 1.3 suite names: accepted and ignored, as Go ignores them in `CipherSuites`.
const TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

impl<'de> Deserialize<'de> for CipherName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some((_, rustls_name)) = TLS12_SUITES.iter().find(|(go, _)| *go == s) {
            return Ok(CipherName(Some((*rustls_name).to_owned())));
        }
        if TLS13_SUITES.contains(&s.as_str()) {
            return Ok(CipherName(None));
        }
        let offered = TLS12_SUITES
            .iter()
            .filter(|(go, rustls)| go == rustls)
            .map(|(go, _)| *go)
            .collect::<Vec<_>>()
            .join(", ");
        let why = if s.starts_with("TLS_") {
            "is not one pgvigil's TLS library (rustls) implements: it has only forward-secret AEAD suites"
        } else {
            "is not a cipher suite name"
        };
        Err(serde::de::Error::custom(format!(
            "cipher suite \"{s}\" {why}; use some of {offered}, or leave cipher_suites out"
        )))
    }
}

#[derive(Debug)]
struct CurveName(Curve);

impl<'de> Deserialize<'de> for CurveName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(CurveName(match s.as_str() {
            "X25519" => Curve::X25519,
            "CurveP256" => Curve::P256,
            "CurveP384" => Curve::P384,
            "CurveP521" => {
                return Err(serde::de::Error::custom(
                    "curve CurveP521 is not implemented by pgvigil's TLS library (rustls); use X25519, CurveP256 or CurveP384",
                ));
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown curve \"{other}\"; use X25519, CurveP256 or CurveP384"
                )));
            }
        }))
    }
}

/// A header value; which headers may be set is checked with the map.
#[derive(Debug)]
struct HeaderValueText(String);

impl<'de> Deserialize<'de> for HeaderValueText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if hyper::header::HeaderValue::from_str(&s).is_err() {
            return Err(serde::de::Error::custom(format!(
                "header value {s:?} has characters HTTP headers cannot carry (control characters or non-ASCII); write it in visible ASCII"
            )));
        }
        Ok(HeaderValueText(s))
    }
}

/// The headers exporter-toolkit lets a file set, with the values it accepts (`None`: any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// A Go `time.Duration` string (`"1s"`, `"500ms"`, `"1m30s"`, `"0"`).
#[derive(Debug)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        humantime::parse_duration(&s).map(GoDuration).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration \"{s}\" ({e}); write e.g. \"1s\" or \"100ms\""
            ))
        })
    }
}

// --- loading and validation ------------------------------------------------------------------

impl WebConfig {
    /// Read and validate `path`, including the certificate files it names (loaded, as the
    /// server will load them, so a bad pair is an error here rather than at the first
    /// handshake).
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let bytes = std::fs::read(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let prefix = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let (line, column) = crate::config::line_column(prefix, prefix.len());
            WebConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message:
                    "the file is not UTF-8 text; YAML files must be UTF-8: re-save it as UTF-8"
                        .into(),
            }
        })?;
        let config = Self::parse(path, text)?;
        if let Some(tls) = &config.tls {
            super::tls::server_config(tls).map_err(|e| {
                let key = e.key;
                invalid(path, text, key, e.message)
            })?;
        }
        Ok(config)
    }

    /// Validate `text` (read from `path`); the files it names are not read.
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
        // An empty file is a valid, empty config (as in exporter-toolkit).
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let tls = match raw.tls_server_config {
            Some(tls) => tls_settings(path, text, dir, tls)?,
            None => None,
        };
        let http = raw.http_server_config.unwrap_or_default();
        let mut headers = BTreeMap::new();
        for (name, HeaderValueText(value)) in http.headers.unwrap_or_default() {
            let Some((_, allowed)) = HEADERS.iter().find(|(h, _)| *h == name) else {
                let names = HEADERS
                    .iter()
                    .map(|(h, _)| *h)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(invalid(
                    path,
                    text,
                    &name,
                    format!(
                        "HTTP header \"{name}\" cannot be configured; the headers a web config may set are {names}"
                    ),
                ));
            };
            if let Some(allowed) = allowed {
                if !allowed.contains(&value.as_str()) {
                    return Err(invalid(
                        path,
                        text,
                        &name,
                        format!(
                            "invalid value \"{value}\" for {name}; use {}",
                            allowed.join(" or ")
                        ),
                    ));
                }
            }
            headers.insert(name, value);
        }
        let rate_limit = match raw.rate_limit {
            Some(RawRateLimit {
                interval: Some(GoDuration(interval)),
                burst,
            }) if !interval.is_zero() => {
                let burst = burst.unwrap_or(0);
                if burst == 0 {
                    return Err(invalid(
                        path,
                        text,
                        "burst",
                        "rate_limit.burst must be at least 1 when rate_limit.interval is set (0 would refuse every request)".into(),
                    ));
                }
                Some(RateLimit { interval, burst })
            }
            _ => None,
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            super::auth::check_hash(hash)
                .map_err(|e| invalid(path, text, user, format!("basic_auth_users.{user}: {e}")))?;
        }
        Ok(WebConfig {
            path: path.to_owned(),
            tls,
            headers,
            http2: http.http2.unwrap_or(true),
            users,
            rate_limit,
        })
    }

    /// The files whose change means the config must be read again: the file itself and every
    /// PEM file it names.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        if let Some(tls) = &self.tls {
            for pem in [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Pem::File(path) = pem {
                    files.push(path.clone());
                }
            }
        }
        files
    }
}

fn tls_settings(
    path: &Path,
    text: &str,
    dir: &Path,
    raw: RawTls,
) -> Result<Option<TlsServerSettings>, WebConfigError> {
    let err = |key: &str, message: String| invalid(path, text, key, message);
    let pem =
        |inline: Option<String>, file: Option<String>, inline_key: &str, file_key: &str| match (
            inline.filter(|s| !s.is_empty()),
            file.filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(_)) => Err(err(
                file_key,
                format!("{inline_key} and {file_key} are both set; keep one of them"),
            )),
            (Some(pem), None) => Ok(Some(Pem::Inline(pem))),
            (None, Some(file)) => Ok(Some(Pem::File(dir.join(file)))),
            (None, None) => Ok(None),
        };
    let cert = pem(raw.cert, raw.cert_file, "cert", "cert_file")?;
    let key = pem(raw.key, raw.key_file, "key", "key_file")?;
    let client_ca = pem(
        raw.client_ca,
        raw.client_ca_file,
        "client_ca",
        "client_ca_file",
    )?;
    let client_auth = match &raw.client_auth_type {
        Some(name) => client_auth(name).map_err(|e| err("client_auth_type", e))?,
        None => ClientAuth::NoClientCert,
    };
    let enabled = cert.is_some()
        || key.is_some()
        || client_ca.is_some()
        || client_auth != ClientAuth::NoClientCert;
    if !enabled {
        // exporter-toolkit: no TLS fields, plain HTTP.
        return Ok(None);
    }
    let Some(cert) = cert else {
        return Err(err(
            "tls_server_config",
            "tls_server_config has no certificate: add cert_file (and key_file) with the server's PEM certificate, or remove tls_server_config to serve plain HTTP".into(),
        ));
    };
    let Some(key) = key else {
        return Err(err(
            "tls_server_config",
            "tls_server_config has a certificate but no key: add key_file with the certificate's PEM private key".into(),
        ));
    };
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(err(
            "client_ca_file",
            "client CAs are configured without a client auth policy: set client_auth_type: RequireAndVerifyClientCert to verify client certificates, or remove client_ca_file".into(),
        ));
    }
    if client_ca.is_none()
        && matches!(
            client_auth,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    {
        return Err(err(
            "client_auth_type",
            "client_auth_type verifies client certificates, but there is no client_ca_file to verify them with: add client_ca_file with the PEM CA that signs the clients' certificates".into(),
        ));
    }
    if let Some(sans) = &raw.client_allowed_sans {
        if !matches!(
            client_auth,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        ) {
            return Err(err(
                "client_allowed_sans",
                "client_allowed_sans requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert".into(),
            ));
        }
        for san in sans {
            if rustls_pki_types::ServerName::try_from(san.as_str()).is_err() {
                return Err(err(
                    "client_allowed_sans",
                    format!(
                        "client_allowed_sans entry \"{san}\" is not a DNS name or IP address; pgvigil matches those SANs only (not e-mail or URI SANs)"
                    ),
                ));
            }
        }
    }
    let min_version = raw.min_version.unwrap_or(TlsVersion::TLS12);
    let max_version = raw.max_version.unwrap_or(TlsVersion::TLS13);
    if max_version < TlsVersion::TLS12 {
        return Err(err(
            "max_version",
            format!(
                "max_version {max_version:?} leaves nothing to serve: pgvigil's TLS library (rustls) implements TLS12 and TLS13 only; use TLS12 or TLS13"
            ),
        ));
    }
    if min_version > max_version {
        return Err(err(
            "min_version",
            format!(
                "min_version {min_version:?} is above max_version {max_version:?}; swap them or drop one"
            ),
        ));
    }
    Ok(Some(TlsServerSettings {
        cert,
        key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites: raw
            .cipher_suites
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.0)
            .collect(),
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        curves: raw
            .curve_preferences
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.0)
            .collect(),
        client_allowed_sans: raw.client_allowed_sans,
    }))
}

/// A YAML error in our form: `FILE:LINE:COL: message`, with a suggestion for a misspelt key.
fn yaml_error(path: &Path, e: &serde_yaml_ng::Error) -> WebConfigError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    // serde_yaml_ng appends " at line L column C"; the location is in front already.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // "tls_server_config: unknown field `x`, expected one of ..." -> with a suggestion.
    let (prefix, rest) = match message.split_once(": unknown field") {
        Some((p, r)) => (format!("{p}: "), format!("unknown field{r}")),
        None => (String::new(), message.clone()),
    };
    let improved = crate::config::improve_message(&rest);
    WebConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message: format!("{prefix}{improved}"),
    }
}

/// An error located at the first line that sets `key` (`key:` at the start of a line, after
/// indentation), or at the top of the file.
fn invalid(path: &Path, text: &str, key: &str, message: String) -> WebConfigError {
    let (mut line, mut column) = (1, 1);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        let trimmed = l.trim_start();
        let unquoted = trimmed.trim_start_matches(['"', '\'']);
        if unquoted.starts_with(key)
            && unquoted[key.len()..]
                .trim_start_matches(['"', '\''])
                .starts_with(':')
        {
            line = i + 1;
            column = l.len() - trimmed.len() + 1;
            break;
        }
    }
    WebConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(Path::new("/etc/pgvigil/web.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_exporter_toolkit_sample_parses() {
        let cfg = parse(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: /etc/ca.pem\n  min_version: TLS12\n  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n    - TLS_AES_128_GCM_SHA256\n  curve_preferences: [X25519, CurveP256]\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  alice: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n",
        )
        .unwrap();
        let tls = cfg.tls.clone().unwrap();
        // Relative to the file's directory, as in exporter-toolkit.
        assert_eq!(tls.cert, Pem::File("/etc/pgvigil/server.crt".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/ca.pem".into())));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(tls.cipher_suites, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert_eq!(tls.curves, [Curve::X25519, Curve::P256]);
        assert!(!cfg.http2);
        assert_eq!(cfg.headers["X-Frame-Options"], "deny");
        assert_eq!(cfg.users.len(), 1);
        assert_eq!(
            cfg.watched_files(),
            [
                PathBuf::from("/etc/pgvigil/web.yml"),
                "/etc/pgvigil/server.crt".into(),
                "/etc/pgvigil/server.key".into(),
                "/etc/ca.pem".into()
            ]
        );
        // Empty: plain HTTP, no authentication.
        let cfg = parse("").unwrap();
        assert!(cfg.tls.is_none() && cfg.users.is_empty());
    }

    #[test]
    fn every_error_has_a_position_and_a_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "tls_server_config:\n  cert_fil: x\n",
                "web.yml:2:3: tls_server_config: unknown key `cert_fil`; did you mean `cert_file`?",
            ),
            ("basic_auth: {}\n", "web.yml:1:1: unknown key `basic_auth`"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Verify\n",
                "web.yml:4:3: client_auth_type \"Verify\" is not a client auth type",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n",
                "web.yml:4:16: tls_server_config.min_version: unknown variant `TLS14`",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "web.yml:4:18: tls_server_config.cipher_suites: cipher suite \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not one pgvigil's TLS library (rustls) implements",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP521]\n",
                "web.yml:4:22: tls_server_config.curve_preferences: curve CurveP521 is not implemented",
            ),
            (
                "tls_server_config:\n  cert_file: a\n",
                "web.yml:1:1: tls_server_config has a certificate but no key",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "web.yml:4:3: client CAs are configured without a client auth policy",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "web.yml:4:3: client_auth_type verifies client certificates, but there is no client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
                "web.yml:4:3: client_allowed_sans requires client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS11\n",
                "web.yml:4:3: max_version TLS11 leaves nothing to serve",
            ),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "web.yml:3:5: HTTP header \"X-Powered-By\" cannot be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "web.yml:3:5: invalid value \"allow\" for X-Frame-Options; use deny or sameorigin",
            ),
            (
                "basic_auth_users:\n  alice: hunter2\n",
                "web.yml:2:3: basic_auth_users.alice: the password of a basic_auth_users entry must be a bcrypt hash",
            ),
            (
                "rate_limit:\n  interval: 1s\n",
                "web.yml:1:1: rate_limit.burst must be at least 1",
            ),
            ("tls_server_config: [\n", "web.yml:1:20:"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            let err = err.trim_start_matches("/etc/pgvigil/");
            assert!(
                err.starts_with(expected),
                "{text:?}:\n  got  {err}\n  want {expected}"
            );
        }
        // The hash is never echoed back: it is a secret in exporter-toolkit's terms.
        let err = parse("basic_auth_users:\n  alice: hunter2\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
