//! `[alerts]`: sinks, state, and the rules with their per-target overrides.
//!
//! Rule tables are free-form TOML (each rule has its own parameters), so they are read as
//! tables and handed to each [`RuleSpec`]'s `build`, which rejects unknown keys and bad values;
//! the errors point at the table they came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use super::error::{ConfigError, improve_message};
use super::raw::HumanDuration;
use crate::alert::rules::{self, RULES, RuleSpec};
use crate::alert::{ConfiguredRule, Severity};

/// Default `[alerts] resend_interval`.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(300);
/// Default `[alerts] runbook_base_url`: the runbooks in pgvigil's repository.
pub const DEFAULT_RUNBOOK_BASE_URL: &str =
    "https://github.com/pgvigil/pgvigil/blob/main/docs/runbooks";
const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Per-target rule tables: `[targets.alerts.<AlertName>]`.
pub(crate) type RawRuleTables = BTreeMap<Spanned<String>, Spanned<toml::Table>>;

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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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

/// The common keys of a rule table.
#[derive(Debug)]
struct Common {
    enabled: bool,
    severity: Severity,
    for_: Duration,
    keep_firing_for: Duration,
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

    /// Check the global rule tables: every name is a rule, every table builds.
    pub(super) fn global_rules(&self, tables: &RawRuleTables) -> Result<(), ConfigError> {
        for (name, table) in tables {
            let spec = self.rule_spec(name)?;
            self.configure(spec, table.get_ref(), table)?;
        }
        Ok(())
    }

    /// The enabled rules of one target: the global tables overlaid with the target's own.
    pub(super) fn target_rules(
        &self,
        global: &RawRuleTables,
        overrides: &RawRuleTables,
    ) -> Result<Vec<ConfiguredRule>, ConfigError> {
        for name in overrides.keys() {
            self.rule_spec(name)?;
        }
        let mut configured = Vec::new();
        for spec in RULES {
            let global_table = global.get(spec.alertname);
            let mut merged = global_table
                .map(|t| t.get_ref().clone())
                .unwrap_or_default();
            let mut span_of = global_table;
            if let Some(own) = overrides.get(spec.alertname) {
                merged.extend(own.get_ref().clone());
                span_of = Some(own);
            }
            let rule = match span_of {
                Some(spanned) => self.configure(spec, &merged, spanned)?,
                None => configure(spec, &merged).map_err(|e| {
                    ConfigError::at(
                        self.path,
                        self.text,
                        None,
                        format!("{}: {e}", spec.alertname),
                    )
                })?,
            };
            if let Some(rule) = rule {
                configured.push(rule);
            }
        }
        Ok(configured)
    }

    fn rule_spec(&self, name: &Spanned<String>) -> Result<&'static RuleSpec, ConfigError> {
        if let Some(spec) = rules::find(name.get_ref()) {
            return Ok(spec);
        }
        let known: Vec<&str> = RULES.iter().map(|s| s.alertname).collect();
        let near = known
            .iter()
            .map(|k| {
                (
                    strsim::jaro_winkler(&name.get_ref().to_lowercase(), &k.to_lowercase()),
                    *k,
                )
            })
            .filter(|(score, _)| *score >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let hint = match near {
            Some((_, k)) => format!("did you mean `{k}`? "),
            None => String::new(),
        };
        Err(self.err(
            name,
            format!(
                "unknown alert rule `{}`; {hint}(rules: {})",
                name.get_ref(),
                known.join(", ")
            ),
        ))
    }

    fn configure(
        &self,
        spec: &'static RuleSpec,
        table: &toml::Table,
        at: &Spanned<toml::Table>,
    ) -> Result<Option<ConfiguredRule>, ConfigError> {
        configure(spec, table).map_err(|e| self.err(at, format!("[{}] {e}", spec.alertname)))
    }
}

/// Every rule with its defaults: what a target gets when the config says nothing.
pub(super) fn default_rules() -> Vec<ConfiguredRule> {
    RULES
        .iter()
        .filter_map(|spec| configure(spec, &toml::Table::new()).ok().flatten())
        .collect()
}

/// Resolve the common keys and build the rule; `None` when it is disabled.
fn configure(
    spec: &'static RuleSpec,
    table: &toml::Table,
) -> Result<Option<ConfiguredRule>, String> {
    let mut params = table.clone();
    let common = common(spec, &mut params)?;
    let rule = (spec.build)(&params).map_err(|e| improve_message(&e))?;
    Ok(common.enabled.then(|| ConfiguredRule {
        alertname: spec.alertname,
        severity: common.severity,
        for_: common.for_,
        keep_firing_for: common.keep_firing_for,
        rule: Arc::from(rule),
    }))
}

fn common(spec: &RuleSpec, params: &mut toml::Table) -> Result<Common, String> {
    let enabled = match params.remove("enabled") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(v) => {
            return Err(format!(
                "enabled = {v} is not a boolean; write enabled = true or enabled = false"
            ));
        }
    };
    let severity = match params.remove("severity") {
        None => spec.default_severity,
        Some(toml::Value::String(s)) => match s.as_str() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => {
                return Err(format!(
                    "severity = \"{s}\" is not a severity; use \"info\", \"warning\" or \"critical\""
                ));
            }
        },
        Some(v) => {
            return Err(format!(
                "severity = {v} is not a severity; use \"info\", \"warning\" or \"critical\""
            ));
        }
    };
    let for_ = duration_key(params, "for", spec.default_for)?;
    let keep_firing_for = duration_key(params, "keep_firing_for", spec.default_keep_firing_for)?;
    Ok(Common {
        enabled,
        severity,
        for_,
        keep_firing_for,
    })
}

fn duration_key(
    params: &mut toml::Table,
    key: &str,
    default: Duration,
) -> Result<Duration, String> {
    match params.remove(key) {
        None => Ok(default),
        Some(toml::Value::String(s)) => {
            let d = humantime::parse_duration(&s).map_err(|e| {
                format!("{key} = \"{s}\" is not a duration ({e}); write e.g. {key} = \"5m\"")
            })?;
            super::limits::check_general(key, d)?;
            Ok(d)
        }
        Some(v) => Err(format!(
            "{key} = {v} has no unit; write a duration string such as {key} = \"5m\""
        )),
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

    fn rule<'a>(cfg: &'a Config, name: &str) -> Option<&'a crate::alert::ConfiguredRule> {
        cfg.targets[0].alerts.iter().find(|r| r.alertname == name)
    }

    #[test]
    fn every_rule_is_on_by_default_with_the_log_sink() {
        let cfg = parse(TARGET).unwrap();
        assert_eq!(
            cfg.targets[0].alerts.len(),
            crate::alert::rules::RULES.len()
        );
        assert!(cfg.alerts.log);
        assert!(cfg.alerts.alertmanagers.is_empty());
        assert_eq!(
            cfg.alerts.runbook_url("IdleInTransaction"),
            "https://github.com/pgvigil/pgvigil/blob/main/docs/runbooks/IdleInTransaction.md"
        );
    }

    #[test]
    fn global_settings_and_per_target_overrides_merge() {
        let text = format!(
            "[alerts.rules.ConnectionsNearLimit]\nseverity = \"critical\"\nfor = \"30s\"\nwarning_ratio = 0.5\n\
             [alerts.rules.LongRunningTransaction]\nenabled = false\n\
             {TARGET}[targets.alerts.ConnectionsNearLimit]\nfor = \"10s\"\n\
             [[targets]]\nname = \"b\"\ndsn = \"host=h\"\n[targets.alerts.LongRunningTransaction]\nenabled = true\n"
        );
        let cfg = parse(&text).unwrap();
        let c = rule(&cfg, "ConnectionsNearLimit").unwrap();
        assert_eq!(c.severity, crate::alert::Severity::Critical);
        assert_eq!(c.for_, std::time::Duration::from_secs(10));
        assert!(
            c.rule
                .describe_params()
                .contains(&("warning_ratio", "0.5".into()))
        );
        assert!(rule(&cfg, "LongRunningTransaction").is_none());
        assert!(
            cfg.targets[1]
                .alerts
                .iter()
                .any(|r| r.alertname == "LongRunningTransaction")
        );
    }

    #[test]
    fn bad_rule_config_is_a_located_error_with_the_fix() {
        let cases = [
            (
                "[alerts.rules.IdleInTransactoin]\nmax_idle = \"1m\"\n".to_owned(),
                "pgvigil.toml:1:15: unknown alert rule `IdleInTransactoin`; did you mean `IdleInTransaction`?",
            ),
            (
                format!("{TARGET}[targets.alerts.ConectionsNearLimit]\nwarning_ratio = 0.5\n"),
                "pgvigil.toml:4:17: unknown alert rule `ConectionsNearLimit`; did you mean `ConnectionsNearLimit`?",
            ),
            (
                "[alerts.rules.ConnectionsNearLimit]\nwarning_ratio = -0.5\n".to_owned(),
                "[ConnectionsNearLimit] warning_ratio = -0.5 is out of range",
            ),
            (
                "[alerts.rules.IdleInTransaction]\nmax_idel = \"1m\"\n".to_owned(),
                "unknown key `max_idel`; did you mean `max_idle`?",
            ),
            (
                "[alerts.rules.IdleInTransaction]\nseverity = \"page\"\n".to_owned(),
                "severity = \"page\" is not a severity",
            ),
            (
                "[alerts.rules.IdleInTransaction]\nfor = 5\n".to_owned(),
                "for = 5 has no unit",
            ),
            (
                format!("{TARGET}[targets.alerts.ConnectionsNearLimit]\ncritical_ratio = 0.5\n"),
                "pgvigil.toml:4:1: [ConnectionsNearLimit] critical_ratio (0.5) is below warning_ratio",
            ),
            (
                "[[alerts.alertmanager]]\nurls = [\"ftp://am:9093\"]\n".to_owned(),
                "is not an http or https URL",
            ),
            (
                "[[alerts.webhook]]\nurl = \"http://hook\"\ntls_config = { insecure_skip_verify = true }\n".to_owned(),
                "pgvigil.toml:3:14: tls_config applies to https:// receivers",
            ),
            (
                "[[alerts.webhook]]\nurl = \"https://hook\"\ntls_config = { cert_file = \"/x\" }\n".to_owned(),
                "pgvigil.toml:3:14: tls_config needs both cert_file and key_file",
            ),
            (
                "[[alerts.webhook]]\nurl = \"https://hook\"\ntls_config = { ca_file = \"/nonexistent/ca.pem\" }\n".to_owned(),
                "pgvigil.toml:3:14: tls_config: cannot read ca_file /nonexistent/ca.pem",
            ),
            (
                "[[alerts.webhook]]\nurl = \"https://hook\"\ntls_config = { insecure = true }\n".to_owned(),
                "unknown key `insecure`; did you mean `insecure_skip_verify`?",
            ),
            (
                "[[alerts.alertmanager]]\ntimeout = \"1s\"\n".to_owned(),
                "has no receiver",
            ),
            (
                "[[alerts.webhook]]\nurl = \"http://x\"\nbearer_token_file = \"/nonexistent/token\"\n"
                    .to_owned(),
                "bearer_token_file: cannot read /nonexistent/token",
            ),
            (
                "[alerts]\nresend_interval = \"10ms\"\n".to_owned(),
                "resend_interval is too short",
            ),
        ];
        for (text, needle) in cases {
            let text = if text.contains("[[targets]]") {
                text
            } else {
                format!("{text}{TARGET}")
            };
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains(needle),
                "expected {needle:?} in {err:?}\n{text}"
            );
            assert!(err.starts_with("pgvigil.toml:"), "{err}");
        }
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
