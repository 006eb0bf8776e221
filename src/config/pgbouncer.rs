//! `[[pgbouncers]]`: PgBouncer instances watched through their admin consoles.
//!
//! An instance's name is the `target` label of its series, exactly like a target's, so
//! `pgvigil_up{target="bouncer-a"}`, the status page and alert routing treat both alike; names
//! must therefore be unique across `[[targets]]` and `[[pgbouncers]]`.

use std::collections::HashMap;
use std::time::Duration;

use toml::Spanned;

use super::raw::RawPgbouncer;
use super::{
    ConfigError, ConnectionSpec, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POLL_INTERVAL,
    DEFAULT_RECONNECT_MAX_BACKOFF, DEFAULT_STATEMENT_TIMEOUT, MIN_POLL_INTERVAL, Validator, error,
};

/// One `[[pgbouncers]]` entry.
#[derive(Debug, Clone)]
pub struct PgbouncerConfig {
    /// Unique across targets and PgBouncers; the `target` label of every series.
    pub name: String,
    /// How to reach the admin console (database `pgbouncer`).
    pub connection: ConnectionSpec,
    /// Time between the starts of two polls.
    pub poll_interval: Duration,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// The admin console cannot `SET statement_timeout`, so this bounds each `SHOW` on the
    /// client side: a poll that gets no answer within twice this (plus a second) reconnects.
    pub statement_timeout: Duration,
    /// Upper bound of the exponential reconnect backoff.
    pub reconnect_max_backoff: Duration,
    /// The enabled alert rules: `[alerts.rules.*]` overlaid with `[pgbouncers.alerts.*]`.
    /// Rules about other sources see no data of theirs here and stay silent.
    pub alerts: Vec<crate::alert::ConfiguredRule>,
}

impl PgbouncerConfig {
    /// An instance with every setting at its default.
    pub fn new(name: &str, connection: ConnectionSpec) -> Self {
        PgbouncerConfig {
            name: name.to_owned(),
            connection,
            poll_interval: DEFAULT_POLL_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            reconnect_max_backoff: DEFAULT_RECONNECT_MAX_BACKOFF,
            alerts: super::alerts::default_rules(),
        }
    }
}

impl Validator<'_> {
    /// Validate every `[[pgbouncers]]` entry; `targets` maps the target names already taken
    /// to the offset where each was defined.
    pub(super) fn pgbouncers(
        &self,
        raw: Vec<Spanned<RawPgbouncer>>,
        targets: &HashMap<String, usize>,
        global_rules: &super::alerts::RawRuleTables,
    ) -> Result<Vec<PgbouncerConfig>, ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for entry in raw {
            let name = &entry.get_ref().name;
            let taken = |what: &str, first: usize| {
                let (line, _) = error::line_column(self.text, first);
                self.err(
                    name,
                    format!(
                        "duplicate name \"{}\" (already used by {what} on line {line}); PgBouncer instances and targets share the `target` label, so every name must be unique across [[targets]] and [[pgbouncers]]",
                        name.get_ref()
                    ),
                )
            };
            if let Some(first) = targets.get(name.get_ref()) {
                return Err(taken("a [[targets]] entry", *first));
            }
            if let Some(first) = seen.get(name.get_ref()) {
                return Err(taken("another [[pgbouncers]] entry", *first));
            }
            seen.insert(name.get_ref().clone(), name.span().start);
            out.push(self.pgbouncer(entry, global_rules)?);
        }
        Ok(out)
    }

    fn pgbouncer(
        &self,
        spanned: Spanned<RawPgbouncer>,
        global_rules: &super::alerts::RawRuleTables,
    ) -> Result<PgbouncerConfig, ConfigError> {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let name = self.source_name(&raw.name, "pgbouncer")?;
        let mut connection = self.connection(
            name,
            span,
            &raw.dsn,
            &raw.dsn_env,
            &raw.password_file,
            ConnectionSpec::parse_admin,
        )?;
        self.tls(&mut connection, &raw.tls_ca_file, &raw.tls_verify)?;
        self.client_cert(
            &mut connection,
            &raw.tls_cert_file,
            &raw.tls_key_file,
            raw.dsn.as_ref().map(|d| d.span()),
        )?;
        let mut bouncer = PgbouncerConfig::new(name, connection);
        bouncer.poll_interval = self.duration(
            &raw.poll_interval,
            "poll_interval",
            DEFAULT_POLL_INTERVAL,
            MIN_POLL_INTERVAL,
        )?;
        bouncer.connect_timeout = self.duration(
            &raw.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
            Duration::from_millis(100),
        )?;
        bouncer.statement_timeout = self.duration(
            &raw.statement_timeout,
            "statement_timeout",
            DEFAULT_STATEMENT_TIMEOUT,
            Duration::from_millis(100),
        )?;
        bouncer.reconnect_max_backoff = self.duration(
            &raw.reconnect_max_backoff,
            "reconnect_max_backoff",
            DEFAULT_RECONNECT_MAX_BACKOFF,
            Duration::from_millis(100),
        )?;
        bouncer.alerts = self.target_rules(global_rules, &raw.alerts)?;
        Ok(bouncer)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, LibpqEnv};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("pgvigil.toml"), text, &LibpqEnv::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn instances_get_the_global_rules_with_their_own_overrides() {
        let cfg = parse(
            "[alerts.rules.PoolSaturated]\nfor = \"1m\"\n\n[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h port=6432\"\n\n[pgbouncers.alerts.PoolClientsWaiting]\nfor = \"30s\"\n",
        )
        .unwrap();
        let rule = |name: &str| {
            cfg.pgbouncers[0]
                .alerts
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

    #[test]
    fn a_pgbouncer_alone_is_a_valid_config_with_defaults() {
        let cfg =
            parse("[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h port=6432 user=u\"\n").unwrap();
        assert!(cfg.targets.is_empty());
        let b = &cfg.pgbouncers[0];
        assert_eq!(b.connection.describe(), "u@h:6432/pgbouncer");
        assert_eq!(b.poll_interval, std::time::Duration::from_secs(15));
    }

    #[test]
    fn names_are_unique_across_targets_and_pgbouncers() {
        let err = parse(
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n[[pgbouncers]]\nname = \"a\"\ndsn = \"host=h\"\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:5:8: duplicate name \"a\" (already used by a [[targets]] entry on line 2)"),
            "{err}"
        );
        let err = parse(
            "[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h\"\n[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("another [[pgbouncers]] entry on line 2"),
            "{err}"
        );
    }

    #[test]
    fn a_pgbouncer_must_point_at_the_admin_console() {
        let err =
            parse("[[pgbouncers]]\nname = \"b\"\ndsn = \"postgres://u@h:6432/app\"\n").unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:3:7: database \"app\""),
            "{err}"
        );
        let err = parse("[[pgbouncers]]\nname = \"b\"\ndsn = \"host=h\"\nlock_timeout = \"1s\"\n")
            .unwrap_err();
        assert!(err.contains("unknown key `lock_timeout`"), "{err}");
    }
}
