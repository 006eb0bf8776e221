//! Building each source's alert rules from the config's rule tables.
//!
//! The config keeps `[alerts.rules.<AlertName>]` and each source's
//! `[targets.alerts.<AlertName>]` / `[pgbouncers.alerts.<AlertName>]` as plain tables with the
//! place each was written ([`RuleTable`]). Here they are checked against [`RULES`] and merged
//! (a source's keys over the global ones), the common keys (`enabled`, `severity`, `for`,
//! `keep_firing_for`, `notify`) are resolved, and each rule's own `build` validates the rest. Every error
//! points at the table it came from, as `FILE:LINE:COL`, exactly as a config error does:
//! `crate::app::load` runs this as part of loading, so `check-config`, startup and reload all
//! reject a bad rule the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::rules::{self, RULES, RuleSpec};
use super::{ConfiguredRule, Severity};
use crate::config::{Config, ConfigError, Location, RuleTable, RuleTables, improve_message};

/// The enabled rules of every source, by source name.
pub type RuleSets = BTreeMap<String, Vec<ConfiguredRule>>;

/// Build the rules of every source of `config`; the first bad table is an error.
pub fn rule_sets(config: &Config) -> Result<RuleSets, ConfigError> {
    let global = &config.alerts.rules;
    for (name, table) in global {
        let spec = rule_spec(name, &table.name_at)?;
        configure_at(spec, &table.params, &table.at)?;
    }
    config
        .sources()
        .map(|source| Ok((source.name.clone(), source_rules(global, source)?)))
        .collect()
}

/// The enabled rules of one source: the global tables overlaid with the source's own.
pub fn source_rules(
    global: &RuleTables,
    source: &crate::config::SourceSettings,
) -> Result<Vec<ConfiguredRule>, ConfigError> {
    let overrides = &source.alerts;
    for (name, table) in overrides {
        rule_spec(name, &table.name_at)?;
    }
    let mut configured = Vec::new();
    for spec in RULES {
        let global_table = global.get(spec.alertname);
        let mut merged = global_table.map(|t| t.params.clone()).unwrap_or_default();
        let mut located: Option<&RuleTable> = global_table;
        if let Some(own) = overrides.get(spec.alertname) {
            merged.extend(own.params.clone());
            located = Some(own);
        }
        let rule = match located {
            Some(table) => configure_at(spec, &merged, &table.at)?,
            None => configure(spec, &merged).map_err(|e| {
                let at = source.defined_at.clone().unwrap_or_else(|| Location {
                    path: "(defaults)".into(),
                    line: 1,
                    column: 1,
                });
                ConfigError::located(&at, format!("{}: {e}", spec.alertname))
            })?,
        };
        if let Some(rule) = rule {
            configured.push(rule);
        }
    }
    Ok(configured)
}

fn rule_spec(name: &str, at: &Location) -> Result<&'static RuleSpec, ConfigError> {
    if let Some(spec) = rules::find(name) {
        return Ok(spec);
    }
    let known: Vec<&str> = RULES.iter().map(|s| s.alertname).collect();
    let near = known
        .iter()
        .map(|k| {
            (
                strsim::jaro_winkler(&name.to_lowercase(), &k.to_lowercase()),
                *k,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let hint = match near {
        Some((_, k)) => format!("did you mean `{k}`? "),
        None => String::new(),
    };
    Err(ConfigError::located(
        at,
        format!(
            "unknown alert rule `{name}`; {hint}(rules: {})",
            known.join(", ")
        ),
    ))
}

fn configure_at(
    spec: &'static RuleSpec,
    table: &toml::Table,
    at: &Location,
) -> Result<Option<ConfiguredRule>, ConfigError> {
    configure(spec, table)
        .map_err(|e| ConfigError::located(at, format!("[{}] {e}", spec.alertname)))
}

/// The common keys of a rule table.
#[derive(Debug)]
struct Common {
    enabled: bool,
    severity: Severity,
    for_: Duration,
    keep_firing_for: Duration,
    notify: bool,
}

/// Every rule with its defaults: what a target gets when the config says nothing.
pub fn default_rules() -> Vec<ConfiguredRule> {
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
        notify: common.notify,
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
    let notify = match params.remove("notify") {
        None => !rules::QUIET_BY_DEFAULT.contains(&spec.alertname),
        Some(toml::Value::Boolean(b)) => b,
        Some(v) => {
            return Err(format!(
                "notify = {v} is not a boolean; write notify = true (send to the receivers) or notify = false (status page, API and log only)"
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
        notify,
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
            crate::config::check_duration_bound(key, d)?;
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

    use super::RuleSets;
    use crate::config::{Config, LibpqEnv};

    const TARGET: &str = "[[targets]]\nname = \"main\"\ndsn = \"host=h\"\n";

    /// The config with its rules, as `crate::app::parse` loads it.
    #[derive(Debug)]
    struct Loaded {
        config: Config,
        rules: RuleSets,
    }

    impl Loaded {
        /// The rules of the `i`-th source.
        fn alerts(&self, i: usize) -> &[crate::alert::ConfiguredRule] {
            let name = &self.config.sources().nth(i).expect("a source").name;
            &self.rules[name]
        }
    }

    fn parse(text: &str) -> Result<Loaded, String> {
        let config = crate::app::parse(Path::new("pgvigil.toml"), text, &LibpqEnv::default())
            .map_err(|e| e.to_string())?;
        let rules = super::rule_sets(&config).map_err(|e| e.to_string())?;
        Ok(Loaded { config, rules })
    }

    fn rule<'a>(cfg: &'a Loaded, name: &str) -> Option<&'a crate::alert::ConfiguredRule> {
        cfg.alerts(0).iter().find(|r| r.alertname == name)
    }

    #[test]
    fn every_rule_is_on_by_default_with_the_log_sink() {
        let cfg = parse(TARGET).unwrap();
        assert_eq!(cfg.alerts(0).len(), crate::alert::rules::RULES.len());
        assert!(cfg.config.alerts.log);
        assert!(cfg.config.alerts.alertmanagers.is_empty());
        assert_eq!(
            cfg.config.alerts.runbook_url("IdleInTransaction"),
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
            cfg.alerts(1)
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
    fn instances_get_the_global_rules_with_their_own_overrides() {
        let cfg = parse(
            "[alerts.rules.PoolSaturated]\nfor = \"1m\"\n\n[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h port=6432\"\n\n[pgbouncers.alerts.PoolClientsWaiting]\nfor = \"30s\"\n",
        )
        .unwrap();
        let rule = |name: &str| {
            cfg.alerts(0)
                .iter()
                .find(|r| r.alertname == name)
                .unwrap_or_else(|| panic!("{name} is not configured for the instance"))
                .for_
        };
        assert_eq!(
            rule("PoolClientsWaiting"),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(rule("PoolSaturated"), std::time::Duration::from_secs(60));
        let err = parse(
            "[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h\"\n[pgbouncers.alerts.PoolClientWaiting]\nfor = \"1s\"\n",
        )
        .unwrap_err();
        assert!(err.contains("did you mean `PoolClientsWaiting`"), "{err}");
    }
}
