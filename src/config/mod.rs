//! Configuration: TOML in, a validated [`Config`] out — plain data, nothing built.
//!
//! Loading is two-stage, like ripgrep's flags: `raw` mirrors the file (unknown keys are
//! errors, spans kept), and [`Config::parse`] validates it into rich types, so every later
//! stage can trust what it gets. Every error names `FILE:LINE:COL`, what is wrong, and the fix.
//! Every key, with its default, is documented in `config/pgvigil.example.toml`.
//!
//! Config knows nothing of the modules that use it. Alert rule tables are kept as written, with
//! their locations ([`RuleTable`]); `crate::alert::configure` builds the rules from them, and
//! `crate::app::load` runs both, so every entry point rejects a bad config the same way.
//!
//! # Layout
//!
//! * `source`: [`SourceSettings`], what every source has (name, connection, timeouts, alert
//!   overrides), and [`Location`].
//! * `target`: `[[targets]]` ([`TargetConfig`]); `pgbouncer`: `[[pgbouncers]]`.
//! * `collectors`: [`CollectorConfig`], the uniform `enabled`/`interval` keys of every
//!   collector table; `guard`: the tables and imports collectors' own settings.
//! * `alerts`: `[alerts]` sinks and rule tables; `dsn`, `tls`: connections; `raw`: serde types;
//!   `error`: [`ConfigError`].

mod advice;
mod alerts;
mod client_cert;
mod collectors;
mod databases;
mod discovery;
mod dsn;
mod error;
mod fragments;
mod guard;
mod indexes;
mod libpq;
mod limits;
mod migrations;
mod pgbouncer;
#[cfg(test)]
mod proptests;
mod raw;
mod sink_tls;
mod source;
mod target;
mod tls;
mod web;

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

pub use advice::AdviceConfig;
pub use alerts::{
    AlertsConfig, DEFAULT_RESEND_INTERVAL, DEFAULT_RUNBOOK_BASE_URL, HttpAuth, HttpSinkConfig,
    RuleTable, RuleTables, read_secret,
};
pub(crate) use client_cert::pair as client_identity;
pub use collectors::{CollectorConfig, Section};
pub use databases::{
    DatabaseOverride, DatabasesConfig, ImportsOverride, Selection, TablesOverride, glob,
};
pub use discovery::{DEFAULT_REFRESH_INTERVAL, DiscoveryConfig};
pub use dsn::{ConnectionSpec, DsnPieces, LibpqEnv};
pub use error::ConfigError;
pub(crate) use error::{improve_message, line_column};
pub use guard::{
    AuditColumns, AuditTableConfig, Ident, ImportsConfig, QualifiedName, TablesConfig,
};
pub use indexes::IndexesConfig;
pub(crate) use limits::check_general as check_duration_bound;
pub use limits::{MAX_DURATION, PG_INT_MILLIS_MAX};
pub use migrations::{MigrationTableConfig, MigrationTool, MigrationsConfig};
pub use pgbouncer::PgbouncerConfig;
pub use raw::LogFormat;
pub use sink_tls::SinkTlsConfig;
pub use source::{Location, SourceSettings};
pub use target::{ActivityConfig, StatementsConfig, TargetConfig};
pub(crate) use tls::ca_certificates as tls_ca_certificates;
pub use tls::{TlsConfig, TlsVerify};
pub use web::{DEFAULT_AUTH_EXEMPT_PATHS, WebSettings};

/// Default address of the HTTP server. 9961 stays clear of postgres_exporter (9187),
/// pgbouncer_exporter (9127) and pg_exporter (9630).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9961";

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// OpenTelemetry export of pgvigil's own spans.
    pub telemetry: TelemetryConfig,
    /// The databases to watch.
    pub targets: Vec<TargetConfig>,
    /// The PgBouncer instances to watch (`[[pgbouncers]]`); their names share the `target`
    /// label with the targets.
    pub pgbouncers: Vec<PgbouncerConfig>,
    /// `[alerts]`: sinks, alert state and the global rule tables (each source may override
    /// them).
    pub alerts: AlertsConfig,
    /// `[discovery]`: targets from file_sd files; `None` without `files`.
    pub discovery: Option<DiscoveryConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where `/metrics`, the API and the status page are served.
    pub listen: SocketAddr,
    /// HTTPS and authentication (`web_config_file`, `auth_exempt_paths`).
    pub web: WebSettings,
    /// Serve `POST /-/reload` (Prometheus' lifecycle API); off by default.
    pub enable_lifecycle: bool,
    /// How many connection attempts (main, database and PgBouncer sessions of every source
    /// together) may be in progress at once; the rest wait in line for a permit before their
    /// `connect_timeout` starts (see `crate::connect_gate`).
    pub max_concurrent_connects: usize,
}

impl ServerConfig {
    /// Default of `max_concurrent_connects`.
    pub const DEFAULT_MAX_CONCURRENT_CONNECTS: usize = 16;
    /// Upper bound of `max_concurrent_connects`.
    pub const MAX_MAX_CONCURRENT_CONNECTS: usize = 1024;
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    /// An `EnvFilter` directive such as `info` or `pgvigil=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Export spans over OTLP (needs the `otel` cargo feature).
    pub otlp_enabled: bool,
    /// OTLP/gRPC endpoint.
    pub otlp_endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
}

impl Config {
    /// Read and validate a config file, or a directory of `*.toml` fragments merged in name
    /// order.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if path.is_dir() {
            return fragments::load_dir(path, &LibpqEnv::from_process());
        }
        let text = read_text(path)?;
        Config::parse(path, &text, &LibpqEnv::from_process())
    }

    /// Validate config text; `path` is only used in error messages, `env` fills DSN gaps.
    /// Alert rule tables are checked by `crate::app::parse`, which calls this.
    pub fn parse(path: &Path, text: &str, env: &LibpqEnv) -> Result<Config, ConfigError> {
        fragments::assemble(&[(path, text)], env)
    }

    /// The configuration used when no file is given: one target named `default`, from
    /// `DATABASE_URL` or else the libpq environment (the local server by default).
    pub fn from_environment() -> Result<Config, ConfigError> {
        let database_url = std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty());
        Config::from_environment_with(database_url.as_deref(), &LibpqEnv::from_process())
    }

    /// [`Config::from_environment`] with the environment passed in.
    pub fn from_environment_with(
        database_url: Option<&str>,
        env: &LibpqEnv,
    ) -> Result<Config, ConfigError> {
        let connection = match database_url {
            Some(url) => ConnectionSpec::parse(url, env)
                .map_err(|e| ConfigError::Environment(format!("DATABASE_URL: {e}")))?,
            None => ConnectionSpec::from_env(env),
        };
        Ok(Config {
            server: ServerConfig {
                listen: DEFAULT_LISTEN.parse().expect("valid default"),
                web: WebSettings::default(),
                enable_lifecycle: false,
                max_concurrent_connects: ServerConfig::DEFAULT_MAX_CONCURRENT_CONNECTS,
            },
            logging: LoggingConfig {
                level: "info".into(),
                format: LogFormat::Text,
            },
            telemetry: TelemetryConfig::default(),
            targets: vec![TargetConfig::new("default", connection)],
            pgbouncers: Vec::new(),
            alerts: AlertsConfig::default(),
            discovery: None,
        })
    }

    /// Every source, targets first, with the settings all kinds share.
    pub fn sources(&self) -> impl Iterator<Item = &SourceSettings> {
        self.targets
            .iter()
            .map(|t| &t.source)
            .chain(self.pgbouncers.iter().map(|b| &b.source))
    }
}

/// A config file's text: its bytes must be UTF-8, and a file that is not gets the position of
/// the first bad byte.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::not_utf8(path, e.as_bytes(), &e.utf8_error()))
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_enabled: false,
            otlp_endpoint: "http://localhost:4317".into(),
            service_name: "pgvigil".into(),
        }
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a LibpqEnv,
}

impl Validator<'_> {
    fn err<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, self.text, Some(spanned.span()), message)
    }

    /// Where byte `offset` of this file is.
    fn location(&self, offset: usize) -> Location {
        Location::of(self.path, self.text, offset)
    }

    /// How an error in this file refers to `other`: "on line 3" here, "in FILE on line 3"
    /// in another file.
    fn where_is(&self, other: &Location) -> String {
        if other.path == self.path {
            format!("on line {}", other.line)
        } else {
            format!("in {} on line {}", other.path.display(), other.line)
        }
    }

    pub(super) fn logging(&self, raw: &raw::RawLogging) -> Result<LoggingConfig, ConfigError> {
        let level = match &raw.level {
            None => "info".to_owned(),
            Some(level) => {
                tracing_subscriber::EnvFilter::try_new(level.get_ref()).map_err(|e| {
                    self.err(
                        level,
                        format!(
                            "invalid log level \"{}\" ({e}); use error, warn, info, debug or trace, or a directive like \"pgvigil=debug,info\"",
                            level.get_ref()
                        ),
                    )
                })?;
                level.get_ref().clone()
            }
        };
        Ok(LoggingConfig {
            level,
            format: raw.format.unwrap_or_default(),
        })
    }

    pub(super) fn telemetry(
        &self,
        raw: &raw::RawTelemetry,
    ) -> Result<TelemetryConfig, ConfigError> {
        let mut telemetry = TelemetryConfig::default();
        if let Some(enabled) = &raw.otlp_enabled {
            if *enabled.get_ref() && !cfg!(feature = "otel") {
                return Err(self.err(
                    enabled,
                    "otlp_enabled = true, but this pgvigil was built without OpenTelemetry; rebuild with `cargo build --features otel` or set otlp_enabled = false",
                ));
            }
            telemetry.otlp_enabled = *enabled.get_ref();
        }
        if let Some(endpoint) = &raw.otlp_endpoint {
            telemetry.otlp_endpoint = endpoint.clone();
        }
        if let Some(service_name) = &raw.service_name {
            telemetry.service_name = service_name.clone();
        }
        Ok(telemetry)
    }
}

/// The keys a collector table accepts, as the parser says when it meets an unknown one; for
/// the registry's tests (every key documented in the example config).
#[cfg(test)]
pub(crate) fn accepted_keys(kind: &str, table: &str) -> Vec<String> {
    let text =
        format!("[[{kind}]]\nname = \"x\"\ndsn = \"host=h\"\n[{kind}.{table}]\nno_such_key = 1\n");
    let err = Config::parse(Path::new("probe.toml"), &text, &LibpqEnv::default())
        .expect_err("the probe key is unknown")
        .to_string();
    let Some((_, valid)) = err.split_once("valid here: ") else {
        panic!("[{kind}.{table}] is no collector table: {err}");
    };
    valid
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("pgvigil.toml"), text, &LibpqEnv::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_target_gets_defaults() {
        let cfg = parse("[[targets]]\nname = \"main\"\ndsn = \"postgres://u@h/db\"\n").unwrap();
        let t = &cfg.targets[0];
        assert_eq!(t.poll_interval, Duration::from_secs(15));
        assert_eq!(t.lock_timeout, Duration::from_secs(1));
        assert_eq!(cfg.server.listen.port(), 9961);
        assert_eq!(t.connection.describe(), "u@h:5432/db");
    }

    #[test]
    fn durations_are_human() {
        let cfg =
            parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\npoll_interval = \"1m 30s\"\n")
                .unwrap();
        assert_eq!(cfg.targets[0].poll_interval, Duration::from_secs(90));
        let err = parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\npoll_interval = \"fast\"\n")
            .unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:4:17: invalid duration \"fast\""),
            "{err}"
        );
        let err =
            parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\npoll_interval = 15\n").unwrap_err();
        assert!(err.contains("has no unit"), "{err}");
        let err = parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\npoll_interval = \"1ms\"\n")
            .unwrap_err();
        assert!(err.contains("too short"), "{err}");
    }

    #[test]
    fn durations_postgresql_cannot_take_are_refused_where_they_are_written() {
        // Defect 2 of issue 16: "30d" passed check-config and the target stayed down for good.
        for key in ["statement_timeout", "lock_timeout"] {
            let err = parse(&format!(
                "[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n{key} = \"30d\"\n"
            ))
            .unwrap_err();
            let col = key.len() + 4;
            assert!(
                err.starts_with(&format!(
                    "pgvigil.toml:4:{col}: {key} = \"30days\" is more than PostgreSQL accepts"
                )),
                "{err}"
            );
            assert!(err.contains("2147483647ms"), "{err}");
        }
        let err = parse(
            "[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n[targets.tables]\nexact_count_tables = [\"t\"]\nexact_count_timeout = \"30d\"\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:6:23: exact_count_timeout = \"30days\" is more than PostgreSQL accepts"),
            "{err}"
        );
        // The largest value PostgreSQL takes is fine.
        let cfg = parse(
            "[[targets]]\nname = \"m\"\ndsn = \"host=h\"\nstatement_timeout = \"2147483647ms\"\n",
        )
        .unwrap();
        assert_eq!(cfg.targets[0].statement_timeout, PG_INT_MILLIS_MAX);
        // Everything else has a general bound.
        let err =
            parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\npoll_interval = \"400years\"\n")
                .unwrap_err();
        assert!(err.starts_with("pgvigil.toml:4:17:"), "{err}");
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn max_concurrent_connects_defaults_and_is_bounded() {
        let target = "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n";
        let cfg = parse(target).unwrap();
        assert_eq!(cfg.server.max_concurrent_connects, 16);
        let cfg = parse(&format!("[server]\nmax_concurrent_connects = 2\n{target}")).unwrap();
        assert_eq!(cfg.server.max_concurrent_connects, 2);
        for bad in ["0", "-1", "1025"] {
            let err = parse(&format!(
                "[server]\nmax_concurrent_connects = {bad}\n{target}"
            ))
            .unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "pgvigil.toml:2:27: max_concurrent_connects = {bad} is out of range; use 1 to 1024"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn each_class_of_mistake_has_its_own_message() {
        let err = parse("[[targets]\n").unwrap_err();
        assert!(err.starts_with("pgvigil.toml:1:"), "{err}");
        let err = parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\npol_interval = \"1s\"\n")
            .unwrap_err();
        assert!(
            err.starts_with(
                "pgvigil.toml:4:1: unknown key `pol_interval`; did you mean `poll_interval`?"
            ),
            "{err}"
        );
        let err = parse("[[targets]]\ndsn = \"host=h\"\n").unwrap_err();
        assert!(err.contains("missing required key `name`"), "{err}");
        let err = parse("[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n").unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:5:8: duplicate target name \"a\" (first used on line 2)"),
            "{err}"
        );
        let err = parse("[[targets]]\nname = \"a\"\n").unwrap_err();
        assert!(err.contains("has no connection"), "{err}");
        let err = parse(
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\npassword_file = \"/nonexistent/pw\"\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:4:17: cannot read password_file /nonexistent/pw"),
            "{err}"
        );
        let err =
            parse("[server]\nlisten = \"nope\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n")
                .unwrap_err();
        assert!(err.contains("invalid listen address"), "{err}");
        let err =
            parse("[logging]\nformat = \"jsno\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n")
                .unwrap_err();
        assert!(err.contains("did you mean `json`"), "{err}");
        let err = parse("").unwrap_err();
        assert!(err.contains("no [[targets]]"), "{err}");
    }

    #[test]
    fn statements_settings_have_defaults_and_bounds() {
        let cfg = parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n").unwrap();
        let s = &cfg.targets[0].statements;
        assert!(s.enabled);
        assert_eq!((s.top_k, s.query_text_length), (100, 200));
        let cfg = parse(
            "[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n[targets.statements]\ntop_k = 5\nrank_window = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(cfg.targets[0].statements.top_k, 5);
        assert_eq!(
            cfg.targets[0].statements.rank_window,
            Duration::from_secs(120)
        );
        let err =
            parse("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n[targets.statements]\ntop_k = 0\n")
                .unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:5:9: top_k = 0 is out of range; use 1 to 10000"),
            "{err}"
        );
        let err = parse(
            "[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n[targets.statements]\nbaseline_min_samples = 9\n",
        )
        .unwrap_err();
        assert!(err.contains("use 1 to 8"), "{err}");
    }

    #[test]
    fn errors_never_contain_the_password() {
        let err = parse("[[targets]]\nname = \"a\"\ndsn = \"postgres://u:pa55word@h:bad/db\"\n")
            .unwrap_err();
        assert!(!err.contains("pa55word"), "{err}");
        let cfg =
            parse("[[targets]]\nname = \"a\"\ndsn = \"postgres://u:pa55word@h/db\"\n").unwrap();
        assert!(!format!("{cfg:?}").contains("pa55word"));
    }

    #[test]
    fn environment_config_prefers_database_url() {
        let env = LibpqEnv {
            host: Some("envhost".into()),
            user: Some("me".into()),
            ..LibpqEnv::default()
        };
        let cfg = Config::from_environment_with(Some("postgres://app@dbhost/shop"), &env).unwrap();
        assert_eq!(cfg.targets[0].connection.describe(), "app@dbhost:5432/shop");
        let cfg = Config::from_environment_with(None, &env).unwrap();
        assert_eq!(cfg.targets[0].connection.describe(), "me@envhost:5432/me");
        assert_eq!(cfg.targets[0].name, "default");
    }
}
