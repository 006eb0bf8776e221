//! `[discovery]`: where targets come from besides `[[targets]]` — Prometheus `file_sd` files
//! (read by `crate::discover`), with `[discovery.defaults]` for the settings of every target
//! found there.

use std::time::Duration;

use toml::Spanned;

use super::dsn::{ConnectionSpec, DsnPieces};
use super::raw::{RawDiscovery, RawTarget};
use super::target::TargetConfig;
use super::{ConfigError, Validator};

/// Prometheus' file_sd default: re-read every file this often even without a change event.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// `[discovery]`
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Glob patterns of file_sd files (`*.json`, `*.yml`, `*.yaml`).
    pub files: Vec<String>,
    /// Every file is re-read this often, whether or not a change was noticed.
    pub refresh_interval: Duration,
    /// `[discovery.defaults]`: the settings of every discovered target (its name and
    /// connection are replaced per target).
    pub defaults: TargetConfig,
    /// The defaults' DSN (`dsn` or the variable `dsn_env` names) without host and port.
    pub base_dsn: String,
}

impl DiscoveryConfig {
    /// Whether any file is watched.
    pub fn enabled(&self) -> bool {
        !self.files.is_empty()
    }

    /// A discovered target: the defaults with this name and connection. `password_file`
    /// overrides the defaults' password file.
    pub fn target(
        &self,
        name: &str,
        host: &str,
        port: u16,
        pieces: &DsnPieces,
        password_file: Option<&str>,
        env: &super::LibpqEnv,
    ) -> Result<TargetConfig, String> {
        let mut connection = ConnectionSpec::discovered(&self.base_dsn, host, port, pieces, env)?;
        connection.set_tls(self.defaults.connection.tls().clone());
        match password_file {
            Some(path) => connection.set_password_file(path.into()),
            None => {
                if let Some(path) = self.defaults.connection.password_file() {
                    connection.set_password_file(path.to_owned());
                }
            }
        }
        let mut target = self.defaults.clone();
        target.source.name = name.to_owned();
        target.source.connection = connection;
        target.source.defined_at = None;
        Ok(target)
    }
}

impl Validator<'_> {
    pub(super) fn discovery(&self, raw: RawDiscovery) -> Result<DiscoveryConfig, ConfigError> {
        let mut files = Vec::new();
        for pattern in &raw.files {
            glob::Pattern::new(pattern.get_ref()).map_err(|e| {
                self.err(
                    pattern,
                    format!(
                        "files: \"{}\" is not a glob pattern ({e}); write e.g. \"/etc/pgvigil/targets/*.json\"",
                        pattern.get_ref()
                    ),
                )
            })?;
            files.push(pattern.get_ref().clone());
        }
        let refresh_interval = self.duration(
            &raw.refresh_interval,
            "refresh_interval",
            DEFAULT_REFRESH_INTERVAL,
            Duration::from_secs(1),
        )?;
        let (defaults, base_dsn) = match raw.defaults {
            None => (self.defaults_template(None)?, String::new()),
            Some(defaults) => {
                let base = self.base_dsn(&defaults)?;
                (self.defaults_template(Some(defaults))?, base)
            }
        };
        Ok(DiscoveryConfig {
            files,
            refresh_interval,
            defaults,
            base_dsn,
        })
    }

    /// The defaults' DSN, checked to leave host and port to the files.
    fn base_dsn(&self, defaults: &Spanned<RawTarget>) -> Result<String, ConfigError> {
        let raw = defaults.get_ref();
        let (base, at) = match (&raw.dsn, &raw.dsn_env) {
            (Some(dsn), _) => (dsn.get_ref().clone(), dsn.span()),
            (None, Some(var)) => (std::env::var(var.get_ref()).unwrap_or_default(), var.span()),
            (None, None) => return Ok(String::new()),
        };
        ConnectionSpec::discovered(&base, "localhost", 5432, &DsnPieces::default(), self.env)
            .map_err(|e| ConfigError::at(self.path, self.text, Some(at), e))?;
        Ok(base)
    }

    /// The defaults validated as a target (name and connection are placeholders).
    fn defaults_template(
        &self,
        defaults: Option<Spanned<RawTarget>>,
    ) -> Result<TargetConfig, ConfigError> {
        let Some(mut defaults) = defaults else {
            let spec =
                ConnectionSpec::discovered("", "localhost", 5432, &DsnPieces::default(), self.env)
                    .expect("an empty base DSN is valid");
            return Ok(TargetConfig::new("discovered", spec));
        };
        let span = defaults.span();
        let raw = defaults.get_mut();
        if let Some(name) = &raw.name {
            return Err(self.err(
                name,
                "[discovery.defaults] takes no name: each discovered target is named by its file (__pgvigil_name, or host-port)",
            ));
        }
        raw.name = Some(Spanned::new(span.clone(), "discovered".to_owned()));
        if raw.dsn.is_none() && raw.dsn_env.is_none() {
            raw.dsn = Some(Spanned::new(span, "host=localhost".to_owned()));
        }
        self.target(defaults)
    }
}
