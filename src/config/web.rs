//! `[server] web_config_file` and `auth_exempt_paths`: HTTPS and authentication of pgvigil's
//! own endpoints.
//!
//! The TLS and authentication settings live in a Prometheus exporter-toolkit `web-config.yml`
//! (see `src/web/config.rs`), so the file that secures node_exporter and postgres_exporter
//! secures pgvigil too; `--web.config.file` on the command line names it as well. The file is
//! loaded here once, so `check-config` reports its mistakes with the YAML file's
//! `FILE:LINE:COL`; the server loads it again at start and whenever it or a certificate it
//! names changes.

use std::path::PathBuf;

use toml::Spanned;

use super::{ConfigError, Validator};
use crate::web::{WebConfig, WebConfigError};

/// Paths served without authentication when `auth_exempt_paths` is not set: the liveness
/// probe, which says nothing about the databases.
pub const DEFAULT_AUTH_EXEMPT_PATHS: &[&str] = &["/healthz"];

/// The paths that may be exempted (the ones that exist and carry no database data beyond up/down).
const EXEMPTABLE: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// How pgvigil's HTTP endpoints are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// The exporter-toolkit web config file; `None` = plain HTTP, no authentication.
    pub config_file: Option<PathBuf>,
    /// Paths served without basic authentication even when `basic_auth_users` is set
    /// (TLS and client certificates still apply).
    pub auth_exempt_paths: Vec<String>,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            config_file: None,
            auth_exempt_paths: DEFAULT_AUTH_EXEMPT_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }
}

impl WebSettings {
    /// Use `path` (from `--web.config.file`), loading it to check it.
    pub fn set_config_file(&mut self, path: PathBuf) -> Result<(), WebConfigError> {
        WebConfig::load(&path)?;
        self.config_file = Some(path);
        Ok(())
    }
}

impl Validator<'_> {
    pub(super) fn web(
        &self,
        file: &Option<Spanned<String>>,
        exempt: &Option<Spanned<Vec<String>>>,
    ) -> Result<WebSettings, ConfigError> {
        let mut web = WebSettings::default();
        if let Some(file) = file {
            if file.get_ref().is_empty() {
                return Err(self.err(
                    file,
                    "web_config_file is empty; name an exporter-toolkit web-config.yml, or leave the key out to serve plain HTTP",
                ));
            }
            let path = PathBuf::from(file.get_ref());
            WebConfig::load(&path).map_err(|e| match e {
                WebConfigError::Read { source, .. } => self.err(
                    file,
                    format!(
                        "cannot read web_config_file {}: {source}; check the path and that pgvigil's user may read it",
                        path.display()
                    ),
                ),
                WebConfigError::Invalid {
                    path,
                    line,
                    column,
                    message,
                } => ConfigError::Invalid {
                    path,
                    line,
                    column,
                    message,
                },
            })?;
            web.config_file = Some(path);
        }
        if let Some(paths) = exempt {
            for p in paths.get_ref() {
                if !EXEMPTABLE.contains(&p.as_str()) {
                    return Err(self.err(
                        paths,
                        format!(
                            "auth_exempt_paths: \"{p}\" cannot be exempted; list some of {} (or [] to authenticate everything)",
                            EXEMPTABLE.join(", ")
                        ),
                    ));
                }
            }
            web.auth_exempt_paths = paths.get_ref().clone();
        }
        Ok(web)
    }
}
