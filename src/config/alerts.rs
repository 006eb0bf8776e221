//! `[alerts]`: sinks, state, and the rule tables with their per-source overrides.
//!
//! Rule tables are free-form TOML (each rule has its own parameters), so they are kept as
//! tables with the place each was written ([`RuleTable`]); the alert module builds the rules
//! from them (`crate::alert::configure`), rejecting unknown rules, keys and values with
//! errors that point at the table they came from. Config itself knows no rule.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use super::error::ConfigError;
use super::raw::HumanDuration;
use super::source::Location;

/// Default `[alerts] resend_interval`.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(300);
/// Default `[alerts] runbook_base_url`: the runbooks in pgvigil's repository.
pub const DEFAULT_RUNBOOK_BASE_URL: &str =
    "https://github.com/pgvigil/pgvigil/blob/main/docs/runbooks";
const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Rule tables as written: `[alerts.rules.<AlertName>]`, `[targets.alerts.<AlertName>]`.
pub(crate) type RawRuleTables = BTreeMap<Spanned<String>, Spanned<toml::Table>>;

/// One rule table as written: `[alerts.rules.<AlertName>]` or a source's override.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTable {
    /// Where the rule's name was written (errors about the name point here).
    pub name_at: Location,
    /// Where the table was written (errors about its keys point here).
    pub at: Location,
    /// Its keys: the common ones (`enabled`, `severity`, `for`, `keep_firing_for`) and the
    /// rule's own parameters.
    pub params: toml::Table,
}

/// Rule tables by rule name (`alertname`).
pub type RuleTables = BTreeMap<String, RuleTable>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    state_dir: Option<Spanned<String>>,
    resend_interval: Option<Spanned<HumanDuration>>,
    runbook_base_url: Option<String>,
    external_url: Option<Spanned<String>>,
    #[serde(default)]
    log: RawLogSink,
    #[serde(default)]
    alertmanager: Vec<Spanned<RawHttpSink>>,
    #[serde(default)]
    webhook: Vec<Spanned<RawHttpSink>>,
    #[serde(default)]
    pub(crate) rules: RawRuleTables,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogSink {
    enabled: Option<bool>,
}

/// `[[alerts.alertmanager]]` and `[[alerts.webhook]]`: the same keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpSink {
    url: Option<Spanned<String>>,
    urls: Option<Spanned<Vec<String>>>,
    timeout: Option<HumanDuration>,
    max_backoff: Option<HumanDuration>,
    basic_auth_user: Option<String>,
    basic_auth_password_file: Option<String>,
    bearer_token_file: Option<String>,
    tls_config: Option<Spanned<super::sink_tls::RawSinkTls>>,
}

/// `[alerts]`
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// Where the alert state file lives; `None` keeps state in memory only.
    pub state_dir: Option<PathBuf>,
    /// How often a firing alert is sent again.
    pub resend_interval: Duration,
    /// `runbook_url` = this + `/<AlertName>.md`.
    pub runbook_base_url: String,
    /// pgvigil's own URL as users reach it; the alerts' `generatorURL`.
    pub external_url: Option<String>,
    /// `[alerts.log] enabled`
    pub log: bool,
    /// `[[alerts.alertmanager]]`: each URL is delivered to independently (an HA pair).
    pub alertmanagers: Vec<HttpSinkConfig>,
    /// `[[alerts.webhook]]`
    pub webhooks: Vec<HttpSinkConfig>,
    /// `[alerts.rules.<AlertName>]`: every source's rules unless it overrides them.
    pub rules: RuleTables,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            state_dir: None,
            resend_interval: DEFAULT_RESEND_INTERVAL,
            runbook_base_url: DEFAULT_RUNBOOK_BASE_URL.to_owned(),
            external_url: None,
            log: true,
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
            rules: RuleTables::new(),
        }
    }
}

impl AlertsConfig {
    /// The `runbook_url` of a rule.
    pub fn runbook_url(&self, alertname: &str) -> String {
        format!(
            "{}/{alertname}.md",
            self.runbook_base_url.trim_end_matches('/')
        )
    }
}

/// One HTTP receiver (an Alertmanager or a webhook).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSinkConfig {
    /// `http://host:port[/path]`.
    pub url: String,
    /// Bound on one delivery attempt.
    pub timeout: Duration,
    /// Upper bound of the exponential retry backoff.
    pub max_backoff: Duration,
    /// Credentials.
    pub auth: HttpAuth,
    /// HTTPS settings (`tls_config`); the defaults verify against the system's roots.
    pub tls: super::SinkTlsConfig,
}

/// How to authenticate to a receiver. Secrets stay in files, re-read at every attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpAuth {
    /// No `Authorization` header.
    None,
    /// HTTP basic auth.
    Basic {
        /// User name.
        user: String,
        /// File whose first line is the password.
        password_file: PathBuf,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// File whose first line is the token.
        token_file: PathBuf,
    },
}

/// The first line of a secret file.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").trim_end().to_owned())
}

impl Validator<'_> {
    pub(super) fn alerts(&self, raw: RawAlerts) -> Result<AlertsConfig, ConfigError> {
        let mut config = AlertsConfig::default();
        if let Some(dir) = &raw.state_dir {
            if dir.get_ref().is_empty() {
                return Err(self.err(dir, "state_dir is empty; name a directory pgvigil may write, e.g. \"/var/lib/pgvigil\", or leave the key out to keep alert state in memory"));
            }
            let path = PathBuf::from(dir.get_ref());
            if let Some(file) = path
                .ancestors()
                .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()))
            {
                return Err(self.err(
                    dir,
                    format!(
                        "state_dir = \"{}\" is not a directory ({} is a file); name a directory pgvigil may write, e.g. \"/var/lib/pgvigil\", or move the file away",
                        path.display(),
                        file.display()
                    ),
                ));
            }
            config.state_dir = Some(path);
        }
        if let Some(interval) = &raw.resend_interval {
            if interval.get_ref().0 < Duration::from_secs(1) {
                return Err(self.err(
                    interval,
                    "resend_interval is too short; use at least \"1s\" (Prometheus uses \"1m\")",
                ));
            }
            config.resend_interval = interval.get_ref().0;
        }
        if let Some(url) = raw.runbook_base_url {
            config.runbook_base_url = url;
        }
        if let Some(url) = &raw.external_url {
            self.http_url(url, "external_url")?;
            config.external_url = Some(url.get_ref().trim_end_matches('/').to_owned());
        }
        config.log = raw.log.enabled.unwrap_or(true);
        config.rules = self.rule_tables(&raw.rules);
        for (tables, sinks, kind) in [
            (raw.alertmanager, &mut config.alertmanagers, "alertmanager"),
            (raw.webhook, &mut config.webhooks, "webhook"),
        ] {
            for table in tables {
                let span = table.span();
                let sink = table.into_inner();
                let mut urls = Vec::new();
                if let Some(url) = &sink.url {
                    urls.push(url.clone());
                }
                if let Some(list) = &sink.urls {
                    urls.extend(
                        list.get_ref()
                            .iter()
                            .map(|u| Spanned::new(list.span(), u.clone())),
                    );
                }
                if urls.is_empty() {
                    return Err(ConfigError::at(
                        self.path,
                        self.text,
                        Some(span),
                        format!(
                            "[[alerts.{kind}]] has no receiver; add url = \"http://host:port\" (or urls = [...] for several, e.g. an Alertmanager HA pair)"
                        ),
                    ));
                }
                for url in &urls {
                    self.http_url(url, "url")?;
                    sinks.push(self.http_sink(url.get_ref(), &sink, span.clone())?);
                }
            }
        }
        Ok(config)
    }

    fn http_url(&self, url: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
        let value = url.get_ref();
        let parsed = value.parse::<hyper::Uri>();
        let scheme_ok = matches!(
            parsed.as_ref().ok().and_then(|u| u.scheme_str()),
            Some("http" | "https")
        );
        if parsed.as_ref().is_ok_and(|u| u.host().is_some()) && scheme_ok {
            return Ok(());
        }
        Err(self.err(
            url,
            format!(
                "{key}: \"{value}\" is not an http or https URL; write e.g. \"http://alertmanager:9093\" or \"https://hooks.example.com/pgvigil\""
            ),
        ))
    }

    fn http_sink(
        &self,
        url: &str,
        raw: &RawHttpSink,
        span: std::ops::Range<usize>,
    ) -> Result<HttpSinkConfig, ConfigError> {
        let at =
            |message: String| ConfigError::at(self.path, self.text, Some(span.clone()), message);
        let check_file = |path: &str, key: &str| -> Result<PathBuf, ConfigError> {
            let path = PathBuf::from(path);
            read_secret(&path)
                .map_err(|e| at(format!("{key}: {e}; create the file or fix the path")))?;
            Ok(path)
        };
        let auth = match (
            &raw.basic_auth_user,
            &raw.basic_auth_password_file,
            &raw.bearer_token_file,
        ) {
            (None, None, None) => HttpAuth::None,
            (Some(user), Some(file), None) => HttpAuth::Basic {
                user: user.clone(),
                password_file: check_file(file, "basic_auth_password_file")?,
            },
            (None, None, Some(file)) => HttpAuth::Bearer {
                token_file: check_file(file, "bearer_token_file")?,
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(at(
                    "basic auth needs both basic_auth_user and basic_auth_password_file".into(),
                ));
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(at("set either basic auth (basic_auth_user + basic_auth_password_file) or bearer_token_file, not both".into()));
            }
        };
        let timeout = raw.timeout.map_or(DEFAULT_SINK_TIMEOUT, |d| d.0);
        let max_backoff = raw.max_backoff.map_or(DEFAULT_MAX_BACKOFF, |d| d.0);
        if timeout < Duration::from_millis(100) || max_backoff < Duration::from_millis(100) {
            return Err(at(
                "timeout and max_backoff must be at least \"100ms\"".into()
            ));
        }
        Ok(HttpSinkConfig {
            url: url.to_owned(),
            timeout,
            max_backoff,
            auth,
            tls: self.sink_tls(url, &raw.tls_config)?,
        })
    }

    /// Rule tables as plain data, each with the place it was written.
    pub(super) fn rule_tables(&self, raw: &RawRuleTables) -> RuleTables {
        raw.iter()
            .map(|(name, table)| {
                (
                    name.get_ref().clone(),
                    RuleTable {
                        name_at: self.location(name.span().start),
                        at: self.location(table.span().start),
                        params: table.get_ref().clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, LibpqEnv};

    const TARGET: &str = "[[targets]]\nname = \"main\"\ndsn = \"host=h\"\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("pgvigil.toml"), text, &LibpqEnv::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sinks_parse_with_auth() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let text = format!(
            "[alerts]\nstate_dir = \"/tmp/x\"\nexternal_url = \"http://pgvigil:9961/\"\n[alerts.log]\nenabled = false\n\
             [[alerts.alertmanager]]\nurls = [\"http://a:9093\", \"http://b:9093/\"]\nbasic_auth_user = \"u\"\nbasic_auth_password_file = \"{}\"\n\
             [[alerts.webhook]]\nurl = \"http://hook/x\"\ntimeout = \"2s\"\n{TARGET}",
            pw.display()
        );
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.alerts.alertmanagers.len(), 2);
        assert!(matches!(
            cfg.alerts.alertmanagers[1].auth,
            crate::config::HttpAuth::Basic { .. }
        ));
        assert_eq!(
            cfg.alerts.webhooks[0].timeout,
            std::time::Duration::from_secs(2)
        );
        assert!(!cfg.alerts.log);
        assert_eq!(
            cfg.alerts.external_url.as_deref(),
            Some("http://pgvigil:9961")
        );
        assert!(!format!("{cfg:?}").contains("secret"));
    }
}
