//! `[[pgbouncers]]`: PgBouncer instances watched through their admin consoles.
//!
//! An instance's name is the `target` label of its series, exactly like a target's, so
//! `pgvigil_up{target="bouncer-a"}`, the status page and alert routing treat both alike; names
//! must therefore be unique across `[[targets]]` and `[[pgbouncers]]`.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use toml::Spanned;

use super::collectors::CollectorConfig;
use super::raw::RawPgbouncer;
use super::source::{Location, RawSource, SourceSettings};
use super::{ConfigError, ConnectionSpec, Validator};

/// One `[[pgbouncers]]` entry. It dereferences to its [`SourceSettings`] (`bouncer.name`,
/// `bouncer.poll_interval`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct PgbouncerConfig {
    /// Name, connection (the admin console, database `pgbouncer`), timeouts and alert
    /// overrides. The admin console cannot `SET statement_timeout`, so `statement_timeout`
    /// bounds each `SHOW` on the client side: a poll that gets no answer within twice this
    /// (plus a second) reconnects. Rules about other kinds of source see no data of theirs here
    /// and stay silent.
    pub source: SourceSettings,
    /// `[pgbouncers.instance]`: SHOW VERSION, LISTS, CONFIG.
    pub instance: CollectorConfig<()>,
    /// `[pgbouncers.pools]`: SHOW POOLS.
    pub pools: CollectorConfig<()>,
    /// `[pgbouncers.databases]`: SHOW DATABASES.
    pub databases: CollectorConfig<()>,
    /// `[pgbouncers.stats]`: SHOW STATS.
    pub stats: CollectorConfig<()>,
}

impl Deref for PgbouncerConfig {
    type Target = SourceSettings;

    fn deref(&self) -> &SourceSettings {
        &self.source
    }
}

impl DerefMut for PgbouncerConfig {
    fn deref_mut(&mut self) -> &mut SourceSettings {
        &mut self.source
    }
}

impl PgbouncerConfig {
    /// An instance with every setting at its default.
    pub fn new(name: &str, connection: ConnectionSpec) -> Self {
        PgbouncerConfig {
            source: SourceSettings::new(name, connection),
            instance: CollectorConfig::on(()),
            pools: CollectorConfig::on(()),
            databases: CollectorConfig::on(()),
            stats: CollectorConfig::on(()),
        }
    }
}

impl Validator<'_> {
    /// Validate every `[[pgbouncers]]` entry; `names` maps the names already taken (by
    /// targets, here or in other files) to where each was defined, and gets these added.
    pub(super) fn pgbouncers(
        &self,
        raw: Vec<Spanned<RawPgbouncer>>,
        names: &mut HashMap<String, (Location, &'static str)>,
    ) -> Result<Vec<PgbouncerConfig>, ConfigError> {
        let mut out = Vec::with_capacity(raw.len());
        for entry in raw {
            let name = &entry.get_ref().name;
            if let Some((first, kind)) = names.get(name.get_ref()) {
                let what = if *kind == "pgbouncer" {
                    "another [[pgbouncers]] entry"
                } else {
                    "a [[targets]] entry"
                };
                return Err(self.err(
                    name,
                    format!(
                        "duplicate name \"{}\" (already used by {what} {}); PgBouncer instances and targets share the `target` label, so every name must be unique across [[targets]] and [[pgbouncers]]",
                        name.get_ref(),
                        self.where_is(first)
                    ),
                ));
            }
            names.insert(
                name.get_ref().clone(),
                (self.location(name.span().start), "pgbouncer"),
            );
            out.push(self.pgbouncer(entry)?);
        }
        Ok(out)
    }

    fn pgbouncer(&self, spanned: Spanned<RawPgbouncer>) -> Result<PgbouncerConfig, ConfigError> {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let source = self.source(
            RawSource {
                name: &raw.name,
                dsn: &raw.dsn,
                dsn_env: &raw.dsn_env,
                password_file: &raw.password_file,
                tls_ca_file: &raw.tls_ca_file,
                tls_verify: &raw.tls_verify,
                tls_cert_file: &raw.tls_cert_file,
                tls_key_file: &raw.tls_key_file,
                poll_interval: &raw.poll_interval,
                connect_timeout: &raw.connect_timeout,
                statement_timeout: &raw.statement_timeout,
                reconnect_max_backoff: &raw.reconnect_max_backoff,
            },
            span,
            "pgbouncer",
            ConnectionSpec::parse_admin,
        )?;
        let mut bouncer = PgbouncerConfig::new(&source.name, source.connection.clone());
        bouncer.source = source;
        bouncer.source.alerts = self.rule_tables(&raw.alerts);
        bouncer.instance = self.toggle(bouncer.instance, &raw.instance)?;
        bouncer.pools = self.toggle(bouncer.pools, &raw.pools)?;
        bouncer.databases = self.toggle(bouncer.databases, &raw.databases)?;
        bouncer.stats = self.toggle(bouncer.stats, &raw.stats)?;
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
