//! Configuration: TOML in, a validated [`Config`] out.
//!
//! Loading is two-stage, like ripgrep's flags: `raw` mirrors the file (unknown keys are
//! errors, spans kept), and [`Config::parse`] validates it into rich types, so every later
//! stage can trust what it gets. Every error names `FILE:LINE:COL`, what is wrong, and the fix.
//! Every key, with its default, is documented in `config/pgvigil.example.toml`.

mod alerts;
mod client_cert;
mod dsn;
mod error;
mod guard;
mod libpq;
mod limits;
mod pgbouncer;
#[cfg(test)]
mod proptests;
mod raw;
mod sink_tls;
mod tls;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use alerts::{
    AlertsConfig, DEFAULT_RESEND_INTERVAL, DEFAULT_RUNBOOK_BASE_URL, HttpAuth, HttpSinkConfig,
    read_secret,
};
pub use dsn::{ConnectionSpec, LibpqEnv};
pub use error::ConfigError;
pub(crate) use error::{improve_message, line_column};
pub use guard::{
    AuditColumns, AuditTableConfig, Ident, ImportsConfig, QualifiedName, TablesConfig,
};
pub use limits::{MAX_DURATION, PG_INT_MILLIS_MAX};
pub use pgbouncer::PgbouncerConfig;
pub use raw::LogFormat;
use raw::{HumanDuration, RawConfig, RawTarget};
pub use sink_tls::SinkTlsConfig;
pub(crate) use tls::ca_certificates as tls_ca_certificates;
pub use tls::{TlsConfig, TlsVerify};
pub use web::{DEFAULT_AUTH_EXEMPT_PATHS, WebSettings};

/// Default address of the HTTP server. 9961 stays clear of postgres_exporter (9187),
/// pgbouncer_exporter (9127) and pg_exporter (9630).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9961";

/// The whole validated configuration.
#[derive(Debug, Clone)]
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
    /// `[alerts]`: sinks and alert state (the rules are per target).
    pub alerts: AlertsConfig,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where `/metrics`, the API and the status page are served.
    pub listen: SocketAddr,
    /// HTTPS and authentication (`web_config_file`, `auth_exempt_paths`).
    pub web: WebSettings,
}

/// `[logging]`
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// An `EnvFilter` directive such as `info` or `pgvigil=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// `[telemetry]`
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Export spans over OTLP (needs the `otel` cargo feature).
    pub otlp_enabled: bool,
    /// OTLP/gRPC endpoint.
    pub otlp_endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
}

/// One `[[targets]]` entry: a database pgvigil watches over its own connection.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique name; the `target` label of every series.
    pub name: String,
    /// How to connect.
    pub connection: ConnectionSpec,
    /// Time between the starts of two polls.
    pub poll_interval: Duration,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// `statement_timeout` of the monitoring session.
    pub statement_timeout: Duration,
    /// `lock_timeout` of the monitoring session: a poll never queues behind a lock for long.
    pub lock_timeout: Duration,
    /// Upper bound of the exponential reconnect backoff.
    pub reconnect_max_backoff: Duration,
    /// `[targets.activity]`
    pub activity: ActivityConfig,
    /// `[targets.tables]`
    pub tables: TablesConfig,
    /// `[targets.imports]`
    pub imports: ImportsConfig,
    /// The enabled alert rules: `[alerts.rules.*]` overlaid with `[targets.alerts.*]`.
    pub alerts: Vec<crate::alert::ConfiguredRule>,
    /// `[targets.statements]`
    pub statements: StatementsConfig,
}

/// `[targets.activity]`: the pg_stat_activity collector.
#[derive(Debug, Clone, Default)]
pub struct ActivityConfig {
    /// application_name values exported as themselves; all others become `other`, which keeps
    /// the label bounded.
    pub application_names: Vec<String>,
}

/// `[targets.statements]`: the pg_stat_statements collector.
#[derive(Debug, Clone)]
pub struct StatementsConfig {
    /// Collect pg_stat_statements at all.
    pub enabled: bool,
    /// Statements exported individually; the rest are summed into `queryid="other"`.
    pub top_k: usize,
    /// Window of the execution-time ranking that picks the top-K.
    pub rank_window: Duration,
    /// Query texts are cut to this many characters.
    pub query_text_length: usize,
    /// Window of each statement's latency baseline (the SlowQuery regression check).
    pub baseline_window: Duration,
    /// Intervals with calls a statement needs before its baseline is used.
    pub baseline_min_samples: u32,
}

impl Default for StatementsConfig {
    fn default() -> Self {
        StatementsConfig {
            enabled: true,
            top_k: 100,
            rank_window: Duration::from_secs(15 * 60),
            query_text_length: 200,
            baseline_window: Duration::from_secs(60 * 60),
            baseline_min_samples: 5,
        }
    }
}

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(60);
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text =
            std::str::from_utf8(&bytes).map_err(|e| ConfigError::not_utf8(path, &bytes, &e))?;
        Config::parse(path, text, &LibpqEnv::from_process())
    }

    /// Validate config text; `path` is only used in error messages, `env` fills DSN gaps.
    pub fn parse(path: &Path, text: &str, env: &LibpqEnv) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        Validator { path, text, env }.config(raw)
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
            },
            logging: LoggingConfig {
                level: "info".into(),
                format: LogFormat::Text,
            },
            telemetry: TelemetryConfig::default(),
            targets: vec![TargetConfig::new("default", connection)],
            pgbouncers: Vec::new(),
            alerts: AlertsConfig::default(),
        })
    }
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

impl TargetConfig {
    /// A target with every setting at its default.
    pub fn new(name: &str, connection: ConnectionSpec) -> Self {
        TargetConfig {
            name: name.to_owned(),
            connection,
            poll_interval: DEFAULT_POLL_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            reconnect_max_backoff: DEFAULT_RECONNECT_MAX_BACKOFF,
            activity: ActivityConfig::default(),
            tables: TablesConfig::default(),
            imports: ImportsConfig::default(),
            alerts: alerts::default_rules(),
            statements: StatementsConfig::default(),
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

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = match &raw.server.listen {
            None => DEFAULT_LISTEN.parse().expect("valid default"),
            Some(listen) => listen.get_ref().parse().map_err(|_| {
                self.err(
                    listen,
                    format!(
                        "invalid listen address \"{}\"; write host:port, e.g. \"0.0.0.0:9961\" or \"127.0.0.1:9961\"",
                        listen.get_ref()
                    ),
                )
            })?,
        };
        let web = self.web(&raw.server.web_config_file, &raw.server.auth_exempt_paths)?;
        let level = match &raw.logging.level {
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
        let mut telemetry = TelemetryConfig::default();
        if let Some(enabled) = &raw.telemetry.otlp_enabled {
            if *enabled.get_ref() && !cfg!(feature = "otel") {
                return Err(self.err(
                    enabled,
                    "otlp_enabled = true, but this pgvigil was built without OpenTelemetry; rebuild with `cargo build --features otel` or set otlp_enabled = false",
                ));
            }
            telemetry.otlp_enabled = *enabled.get_ref();
        }
        if let Some(endpoint) = raw.telemetry.otlp_endpoint {
            telemetry.otlp_endpoint = endpoint;
        }
        if let Some(service_name) = raw.telemetry.service_name {
            telemetry.service_name = service_name;
        }

        if raw.targets.is_empty() && raw.pgbouncers.is_empty() {
            return Err(ConfigError::at(
                self.path,
                self.text,
                None,
                "no [[targets]] or [[pgbouncers]] defined; add a target with a name and a dsn (see config/pgvigil.example.toml), or run pgvigil without --config to watch the database named by DATABASE_URL / PGHOST",
            ));
        }
        self.global_rules(&raw.alerts.rules)?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut targets = Vec::with_capacity(raw.targets.len());
        for target in raw.targets {
            let name = target.get_ref().name.clone();
            if let Some(first) = seen.get(name.get_ref()) {
                let (line, _) = error::line_column(self.text, *first);
                return Err(self.err(
                    &name,
                    format!(
                        "duplicate target name \"{}\" (first used on line {line}); every target needs a unique name, it becomes the `target` label",
                        name.get_ref()
                    ),
                ));
            }
            seen.insert(name.get_ref().clone(), name.span().start);
            targets.push(self.target(target, &raw.alerts.rules)?);
        }
        let pgbouncers = self.pgbouncers(raw.pgbouncers, &seen, &raw.alerts.rules)?;
        let alerts = self.alerts(raw.alerts)?;

        Ok(Config {
            server: ServerConfig { listen, web },
            logging: LoggingConfig {
                level,
                format: raw.logging.format.unwrap_or_default(),
            },
            telemetry,
            targets,
            pgbouncers,
            alerts,
        })
    }

    fn target(
        &self,
        spanned: Spanned<RawTarget>,
        global_rules: &alerts::RawRuleTables,
    ) -> Result<TargetConfig, ConfigError> {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let name = self.source_name(&raw.name, "target")?;
        let mut connection = self.connection(
            name,
            span,
            &raw.dsn,
            &raw.dsn_env,
            &raw.password_file,
            ConnectionSpec::parse,
        )?;
        self.tls(&mut connection, &raw.tls_ca_file, &raw.tls_verify)?;
        self.client_cert(
            &mut connection,
            &raw.tls_cert_file,
            &raw.tls_key_file,
            raw.dsn.as_ref().map(|d| d.span()),
        )?;

        let mut target = TargetConfig::new(name, connection);
        let duration = |value: &Option<Spanned<HumanDuration>>, key: &str, default, min| {
            self.duration(value, key, default, min)
        };
        target.poll_interval = duration(
            &raw.poll_interval,
            "poll_interval",
            DEFAULT_POLL_INTERVAL,
            MIN_POLL_INTERVAL,
        )?;
        target.connect_timeout = duration(
            &raw.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
            Duration::from_millis(100),
        )?;
        target.statement_timeout = duration(
            &raw.statement_timeout,
            "statement_timeout",
            DEFAULT_STATEMENT_TIMEOUT,
            Duration::from_millis(100),
        )?;
        target.lock_timeout = duration(
            &raw.lock_timeout,
            "lock_timeout",
            DEFAULT_LOCK_TIMEOUT,
            Duration::from_millis(10),
        )?;
        target.reconnect_max_backoff = duration(
            &raw.reconnect_max_backoff,
            "reconnect_max_backoff",
            DEFAULT_RECONNECT_MAX_BACKOFF,
            Duration::from_millis(100),
        )?;
        target.activity.application_names = raw.activity.application_names;
        target.tables = self.tables(raw.tables)?;
        target.imports = self.imports(raw.imports)?;
        target.alerts = self.target_rules(global_rules, &raw.alerts)?;
        target.statements = self.statements(raw.statements, &duration)?;
        Ok(target)
    }
}

impl Validator<'_> {
    /// A target or PgBouncer name: it becomes the `target` label value and part of URLs.
    fn source_name<'n>(
        &self,
        name: &'n Spanned<String>,
        what: &str,
    ) -> Result<&'n str, ConfigError> {
        let value = name.get_ref();
        if value.is_empty()
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(self.err(
                name,
                format!(
                    "invalid {what} name \"{value}\"; use letters, digits, '_', '-' or '.' (it becomes the target label value and part of URLs)"
                ),
            ));
        }
        Ok(value)
    }

    /// A connection from exactly one of `dsn` / `dsn_env`, plus an optional password file.
    /// `parse` turns the DSN text into a spec (targets and PgBouncer admin consoles default
    /// differently).
    fn connection(
        &self,
        name: &str,
        span: std::ops::Range<usize>,
        dsn: &Option<Spanned<String>>,
        dsn_env: &Option<Spanned<String>>,
        password_file: &Option<Spanned<String>>,
        parse: fn(&str, &LibpqEnv) -> Result<ConnectionSpec, String>,
    ) -> Result<ConnectionSpec, ConfigError> {
        let mut connection = match (dsn, dsn_env) {
            (Some(dsn), None) => parse(dsn.get_ref(), self.env).map_err(|e| self.err(dsn, e))?,
            (None, Some(var)) => {
                let value = std::env::var(var.get_ref()).map_err(|_| {
                    self.err(
                        var,
                        format!(
                            "environment variable {} (named by dsn_env) is not set; export it, or use dsn = \"...\" instead",
                            var.get_ref()
                        ),
                    )
                })?;
                parse(&value, self.env).map_err(|e| {
                    self.err(var, format!("environment variable {}: {e}", var.get_ref()))
                })?
            }
            (Some(dsn), Some(_)) => {
                return Err(self.err(
                    dsn,
                    format!("target \"{name}\" sets both dsn and dsn_env; keep exactly one"),
                ));
            }
            (None, None) => {
                return Err(ConfigError::at(
                    self.path,
                    self.text,
                    Some(span),
                    format!(
                        "target \"{name}\" has no connection; add dsn = \"postgres://user@host:5432/db\" or dsn_env = \"VARIABLE\""
                    ),
                ));
            }
        };
        if let Some(file) = password_file {
            let path = PathBuf::from(file.get_ref());
            dsn::read_password_file(&path).map_err(|e| self.err(file, e))?;
            connection.set_password_file(path);
        }
        Ok(connection)
    }

    /// An optional duration with a default and a lower bound.
    fn duration(
        &self,
        value: &Option<Spanned<HumanDuration>>,
        key: &str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let d = value.get_ref().0;
        if d < min {
            return Err(self.err(
                value,
                format!(
                    "{key} = \"{}\" is too short; use at least {}",
                    humantime::format_duration(d),
                    humantime::format_duration(min)
                ),
            ));
        }
        limits::check_max(key, d).map_err(|e| self.err(value, e))?;
        Ok(d)
    }
}

/// Validates one optional duration key: (value, key, default, minimum).
type DurationCheck<'a> = dyn Fn(&Option<Spanned<HumanDuration>>, &str, Duration, Duration) -> Result<Duration, ConfigError>
    + 'a;

impl Validator<'_> {
    fn statements(
        &self,
        raw: raw::RawStatements,
        duration: &DurationCheck<'_>,
    ) -> Result<StatementsConfig, ConfigError> {
        let defaults = StatementsConfig::default();
        let int = |value: &Option<Spanned<i64>>,
                   key: &str,
                   default: usize,
                   range: std::ops::RangeInclusive<i64>,
                   why: &str|
         -> Result<usize, ConfigError> {
            let Some(value) = value else {
                return Ok(default);
            };
            let v = *value.get_ref();
            if !range.contains(&v) {
                return Err(self.err(
                    value,
                    format!(
                        "{key} = {v} is out of range; use {} to {} ({why})",
                        range.start(),
                        range.end()
                    ),
                ));
            }
            Ok(v as usize)
        };
        Ok(StatementsConfig {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            top_k: int(
                &raw.top_k,
                "top_k",
                defaults.top_k,
                1..=10_000,
                "each exported statement is a series per metric",
            )?,
            rank_window: duration(
                &raw.rank_window,
                "rank_window",
                defaults.rank_window,
                Duration::from_secs(1),
            )?,
            query_text_length: int(
                &raw.query_text_length,
                "query_text_length",
                defaults.query_text_length,
                16..=10_000,
                "characters of query text kept per statement",
            )?,
            baseline_window: duration(
                &raw.baseline_window,
                "baseline_window",
                defaults.baseline_window,
                Duration::from_secs(1),
            )?,
            baseline_min_samples: int(
                &raw.baseline_min_samples,
                "baseline_min_samples",
                defaults.baseline_min_samples as usize,
                1..=crate::collect::statements::BASELINE_WARMUP as i64,
                "intervals with calls before a statement's baseline is trusted",
            )? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
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
