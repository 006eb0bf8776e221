//! Every alerting rule, one file each, listed once in [`RULES`].
//!
//! A rule's settings come from `[alerts.rules.<AlertName>]`, overridden per target by
//! `[targets.alerts.<AlertName>]`. The keys `enabled`, `severity` and `for` are common to every
//! rule and handled by the engine; everything else in the table is the rule's own parameters,
//! which its `build` function deserialises (unknown keys are errors) and validates.
//!
//! Every rule has a runbook at `docs/runbooks/<AlertName>.md` (a test checks it exists), linked
//! from the alert's `runbook_url`.

mod connections_near_limit;
mod idle_in_transaction;
mod long_running_transaction;
mod target_down;
// PgBouncer pools.
mod pool_client_connections_near_limit;
mod pool_clients_waiting;
mod pool_max_wait_high;
mod pool_saturated;
// The data-loss guard.
mod import_common;
pub mod import_reported_mismatch;
pub mod import_rolled_back;
pub mod import_row_shortfall;
pub mod import_stalled;
pub mod rolled_back_inserts;
pub mod table_rows_dropped;
// Query statistics.
pub mod slow_query;
// The server-health layer.
mod checksum_failures;
mod database_growth;
mod deadlocks_detected;
mod postgres_restarted;
mod recovery_role_changed;
mod settings_pending_restart;
mod wraparound_risk;
// Replication, slots and the archiver (issue 12).
mod archive_failing;
mod replication_lag_high;
mod replication_slot_inactive;
mod replication_slot_wal_retention_high;
mod standby_not_streaming;
// The server-health layer: locks.
mod lock_queue;
mod lock_waits_long;
// The schema guard (issue 14).
mod index_suggested;
mod invalid_index;
mod migration_failed;
mod sequence_exhaustion;

use std::time::Duration;

use super::{Rule, Severity};

/// How to make one rule, and its defaults.
#[derive(Debug)]
pub struct RuleSpec {
    /// The `alertname`.
    pub alertname: &'static str,
    /// Severity unless configured otherwise.
    pub default_severity: Severity,
    /// How long a condition must hold before the alert fires, unless configured otherwise.
    pub default_for: Duration,
    /// How long an alert stays firing after its condition was last seen, unless configured
    /// otherwise. Zero for states that persist (a shortfall stays a shortfall); longer for
    /// events a single poll sees (a mass DELETE in one interval), so the notification survives
    /// Alertmanager's grouping delay and the on-call engineer still sees it.
    pub default_keep_firing_for: Duration,
    /// One line for the README: when the rule fires.
    pub fires_when: &'static str,
    /// Build the rule from its own parameters (the merged table minus `enabled`, `severity`,
    /// `for`). The error says what is wrong and how to fix it.
    pub build: fn(&toml::Table) -> Result<Box<dyn Rule>, String>,
}

/// Every rule pgvigil knows.
pub const RULES: &[RuleSpec] = &[
    target_down::SPEC,
    connections_near_limit::SPEC,
    idle_in_transaction::SPEC,
    long_running_transaction::SPEC,
    // PgBouncer pools.
    pool_clients_waiting::SPEC,
    pool_max_wait_high::SPEC,
    pool_saturated::SPEC,
    pool_client_connections_near_limit::SPEC,
    // The data-loss guard.
    import_row_shortfall::SPEC,
    import_reported_mismatch::SPEC,
    import_stalled::SPEC,
    import_rolled_back::SPEC,
    table_rows_dropped::SPEC,
    rolled_back_inserts::SPEC,
    // Query statistics.
    slow_query::SPEC,
    // The server-health layer.
    postgres_restarted::SPEC,
    recovery_role_changed::SPEC,
    settings_pending_restart::SPEC,
    checksum_failures::SPEC,
    deadlocks_detected::SPEC,
    database_growth::SPEC,
    wraparound_risk::SPEC,
    // Replication, slots and the archiver (issue 12).
    replication_lag_high::SPEC,
    standby_not_streaming::SPEC,
    replication_slot_inactive::SPEC,
    replication_slot_wal_retention_high::SPEC,
    archive_failing::SPEC,
    // The server-health layer: locks.
    lock_waits_long::SPEC,
    lock_queue::SPEC,
    // The schema guard (issue 14).
    migration_failed::SPEC,
    invalid_index::SPEC,
    sequence_exhaustion::SPEC,
    index_suggested::SPEC,
];

/// Rules whose alerts are not sent to the receivers unless their table says `notify = true`:
/// advice rather than trouble. They still fire on the status page, in `/api/v1/alerts` and in
/// the log.
pub const QUIET_BY_DEFAULT: &[&str] = &["IndexSuggested"];

/// Deserialize a rule's parameters from its table, with serde's defaults and unknown-key checks.
pub fn params<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|e| e.to_string())
}

/// The `build` check of a rule without parameters: any key in its table is an error
/// ("unknown field `x`, there are no fields"), as for a rule with parameters.
pub fn no_params(table: &toml::Table) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    params(table).map(|NoParams {}| ())
}

/// Look a rule up by its `alertname`.
pub fn find(alertname: &str) -> Option<&'static RuleSpec> {
    RULES.iter().find(|spec| spec.alertname == alertname)
}

/// A duration as a TOML value for [`Rule::describe_params`]: a quoted humantime string, as the
/// config file writes it (`"10s"`).
pub(crate) fn toml_duration(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

/// A float as a TOML value for [`Rule::describe_params`]: always with a fraction (`1.0`, not
/// `1`), so the README shows the type the parser expects.
pub(crate) fn toml_float(f: f64) -> String {
    format!("{f:?}")
}

/// A duration for an annotation: whole seconds, human-readable (`5m 3s`).
pub fn human_seconds(seconds: f64) -> String {
    humantime::format_duration(Duration::from_secs(seconds.max(0.0).round() as u64)).to_string()
}

/// The README's rules reference: a Markdown table of [`RULES`] with each rule's defaults and
/// parameters (from the rule's own `build` on an empty table, so the table cannot drift). A
/// test keeps the README's copy identical (`PGVIGIL_BLESS=1` rewrites it).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| alert | default severity | default `for` | default `keep_firing_for` | parameters (defaults) | fires when |\n|---|---|---|---|---|---|\n",
    );
    for spec in RULES {
        out.push_str(&format!(
            "| [`{name}`](docs/runbooks/{name}.md) | {} | {} | {} | {} | {} |\n",
            spec.default_severity.as_str(),
            humantime::format_duration(spec.default_for),
            humantime::format_duration(spec.default_keep_firing_for),
            defaults_of(spec),
            spec.fires_when.replace('|', "\\|"),
            name = spec.alertname,
        ));
    }
    out
}

fn defaults_of(spec: &RuleSpec) -> String {
    match (spec.build)(&toml::Table::new()) {
        Ok(rule) => {
            let params = rule.describe_params();
            if params.is_empty() {
                "none".to_owned()
            } else {
                params
                    .iter()
                    .map(|(k, v)| format!("`{k}` = {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        Err(e) => format!("(cannot build with defaults: {e})"),
    }
}

/// Observations for the PgBouncer rules' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::collect::Observations;
    use crate::collect::pgbouncer::{Database, PgbouncerReport, Pool};

    /// A pool of `datname`/`app` with `servers_active` server connections.
    pub(crate) fn pool(datname: &str, servers_active: i64) -> Pool {
        Pool {
            datname: datname.into(),
            usename: "app".into(),
            servers_active,
            pool_mode: "session".into(),
            ..Pool::default()
        }
    }

    /// A polled PgBouncer with these pools, each database with pool_size 2.
    pub(crate) fn bouncer(pools: Vec<Pool>) -> Observations {
        let databases = pools
            .iter()
            .map(|p| Database {
                name: p.datname.clone(),
                pool_size: 2,
                ..Database::default()
            })
            .collect();
        Observations {
            up: true,
            pgbouncer: Some(PgbouncerReport {
                pools: Some(pools),
                databases: Some(databases),
                ..PgbouncerReport::default()
            }),
            ..Observations::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_builds_with_defaults_and_has_a_runbook() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks");
        for spec in RULES {
            let rule = (spec.build)(&toml::Table::new()).expect(spec.alertname);
            assert_eq!(rule.alertname(), spec.alertname);
            let path = format!("{dir}/{}.md", spec.alertname);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("{} has no runbook at {path}", spec.alertname));
            for section in ["## Meaning", "## Confirm", "## Act"] {
                assert!(text.contains(section), "{path} lacks {section}");
            }
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let alertname = name.strip_suffix(".md").unwrap_or(&name);
            assert!(
                find(alertname).is_some(),
                "docs/runbooks/{name} belongs to no rule in RULES"
            );
        }
    }

    #[test]
    fn alertnames_are_unique_camel_case() {
        let mut seen = std::collections::HashSet::new();
        for spec in RULES {
            assert!(seen.insert(spec.alertname), "{} twice", spec.alertname);
            assert!(spec.alertname.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(spec.alertname.starts_with(|c: char| c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn unknown_parameters_are_rejected_by_every_rule() {
        let mut table = toml::Table::new();
        table.insert("no_such_key".into(), toml::Value::Integer(1));
        for spec in RULES {
            let err = (spec.build)(&table).expect_err(spec.alertname);
            assert!(err.contains("no_such_key"), "{}: {err}", spec.alertname);
        }
    }

    /// The keys every rule table takes besides the rule's own parameters.
    const COMMON_KEYS: [&str; 5] = ["enabled", "severity", "for", "keep_firing_for", "notify"];

    #[test]
    fn example_config_documents_every_rule_with_its_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgvigil.example.toml");
        let example: toml::Table = std::fs::read_to_string(path)
            .expect("config/pgvigil.example.toml")
            .parse()
            .expect("the example config is TOML");
        let rules = example["alerts"]["rules"]
            .as_table()
            .expect("[alerts.rules] in the example");
        for spec in RULES {
            let name = spec.alertname;
            let table = rules
                .get(name)
                .and_then(toml::Value::as_table)
                .unwrap_or_else(|| panic!("the example config has no [alerts.rules.{name}]"));
            assert_eq!(
                table.get("severity").and_then(toml::Value::as_str),
                Some(spec.default_severity.as_str()),
                "[alerts.rules.{name}] severity"
            );
            for (key, default) in [
                ("for", spec.default_for),
                ("keep_firing_for", spec.default_keep_firing_for),
            ] {
                let value = table
                    .get(key)
                    .and_then(toml::Value::as_str)
                    .unwrap_or_else(|| panic!("[alerts.rules.{name}] lacks {key}"));
                assert_eq!(
                    humantime::parse_duration(value).ok(),
                    Some(default),
                    "[alerts.rules.{name}] {key} = {value:?} is not the default"
                );
            }
            let mut own = table.clone();
            for key in COMMON_KEYS {
                own.remove(key);
            }
            let defaults = (spec.build)(&toml::Table::new())
                .expect(name)
                .describe_params();
            let documented = (spec.build)(&own)
                .unwrap_or_else(|e| panic!("[alerts.rules.{name}] does not build: {e}"))
                .describe_params();
            assert_eq!(
                documented, defaults,
                "[alerts.rules.{name}] must show every parameter at its default"
            );
            let mut described: Vec<&str> = defaults.iter().map(|(k, _)| *k).collect();
            let mut keys: Vec<&str> = own.keys().map(String::as_str).collect();
            described.sort_unstable();
            keys.sort_unstable();
            assert_eq!(
                keys, described,
                "[alerts.rules.{name}] keys vs the rule's describe_params()"
            );
        }
    }

    #[test]
    fn described_params_are_the_keys_the_rules_accept() {
        // Every described key, written back with its described value, is accepted and gives
        // the same description: the descriptions are real keys with valid TOML values.
        for spec in RULES {
            let params = (spec.build)(&toml::Table::new())
                .expect(spec.alertname)
                .describe_params();
            let text: String = params.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            let table: toml::Table = text
                .parse()
                .unwrap_or_else(|e| panic!("{}: {text}: {e}", spec.alertname));
            let rebuilt =
                (spec.build)(&table).unwrap_or_else(|e| panic!("{}: {text}: {e}", spec.alertname));
            assert_eq!(rebuilt.describe_params(), params, "{}", spec.alertname);
        }
    }

    #[test]
    fn readme_rules_reference_is_current() {
        crate::readme::assert_generated_block(
            "rules-reference",
            &reference_markdown(),
            "src/alert/rules/",
        );
    }
}
