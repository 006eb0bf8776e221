//! What every watched source has, whatever it is (a PostgreSQL target, a PgBouncer instance):
//! [`SourceSettings`], embedded in [`super::TargetConfig`] and [`super::PgbouncerConfig`], and
//! the validation both share (name, connection, timeouts).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::alerts::RuleTables;
use super::dsn::{self, ConnectionSpec, LibpqEnv};
use super::raw::HumanDuration;
use super::{ConfigError, Validator};

pub(super) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(60);
pub(super) const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A place in a config file: where a source, a rule table or a key was written, so errors
/// found after parsing (alert rules, duplicates across fragments) still say `FILE:LINE:COL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` of `text`, the contents of `path`.
    pub fn of(path: &Path, text: &str, offset: usize) -> Location {
        let (line, column) = super::error::line_column(text, offset);
        Location {
            path: path.to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// The settings every source has: its name, how to reach it, how often to poll it, and its
/// alert rule overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Unique across targets and PgBouncers; the `target` label of every series.
    pub name: String,
    /// How to connect.
    pub connection: ConnectionSpec,
    /// Time between the starts of two polls: the interval of every collector that has none
    /// of its own.
    pub poll_interval: Duration,
    /// Give up a connection attempt after this long: the whole attempt (TCP, TLS, startup,
    /// authentication, session setup).
    pub connect_timeout: Duration,
    /// `statement_timeout` of the monitoring session (a PgBouncer admin console cannot `SET`
    /// it, so there it bounds each `SHOW` on the client side).
    pub statement_timeout: Duration,
    /// Upper bound of the exponential reconnect backoff.
    pub reconnect_max_backoff: Duration,
    /// `[targets.alerts.<AlertName>]` / `[pgbouncers.alerts.<AlertName>]`: this source's
    /// overrides of the global rule tables, as written (the alert module builds the rules).
    pub alerts: RuleTables,
    /// Where the entry was written; `None` for sources made in code.
    pub defined_at: Option<Location>,
}

impl SourceSettings {
    /// A source with every setting at its default.
    pub fn new(name: &str, connection: ConnectionSpec) -> Self {
        SourceSettings {
            name: name.to_owned(),
            connection,
            poll_interval: DEFAULT_POLL_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            reconnect_max_backoff: DEFAULT_RECONNECT_MAX_BACKOFF,
            alerts: RuleTables::new(),
            defined_at: None,
        }
    }

    /// Whether a running source must reconnect to apply `other`: its connection or the
    /// timeouts set on its session differ. Everything else changes in place.
    pub fn same_connection(&self, other: &SourceSettings) -> bool {
        self.connection == other.connection
            && self.connect_timeout == other.connect_timeout
            && self.statement_timeout == other.statement_timeout
    }
}

/// The raw keys every source table has, borrowed from its raw struct.
pub(super) struct RawSource<'r> {
    pub(super) name: &'r Spanned<String>,
    pub(super) dsn: &'r Option<Spanned<String>>,
    pub(super) dsn_env: &'r Option<Spanned<String>>,
    pub(super) password_file: &'r Option<Spanned<String>>,
    pub(super) tls_ca_file: &'r Option<Spanned<String>>,
    pub(super) tls_verify: &'r Option<Spanned<String>>,
    pub(super) tls_cert_file: &'r Option<Spanned<String>>,
    pub(super) tls_key_file: &'r Option<Spanned<String>>,
    pub(super) poll_interval: &'r Option<Spanned<HumanDuration>>,
    pub(super) connect_timeout: &'r Option<Spanned<HumanDuration>>,
    pub(super) statement_timeout: &'r Option<Spanned<HumanDuration>>,
    pub(super) reconnect_max_backoff: &'r Option<Spanned<HumanDuration>>,
}

impl Validator<'_> {
    /// Validate the shared keys of one source entry. `what` names the kind in errors
    /// ("target", "pgbouncer"); `parse` turns DSN text into a spec (targets and admin consoles
    /// default differently).
    pub(super) fn source(
        &self,
        raw: RawSource<'_>,
        span: std::ops::Range<usize>,
        what: &str,
        parse: fn(&str, &LibpqEnv) -> Result<ConnectionSpec, String>,
    ) -> Result<SourceSettings, ConfigError> {
        let name = self.source_name(raw.name, what)?;
        let mut connection = self.connection(
            name,
            span.clone(),
            raw.dsn,
            raw.dsn_env,
            raw.password_file,
            parse,
        )?;
        self.tls(&mut connection, raw.tls_ca_file, raw.tls_verify)?;
        self.client_cert(
            &mut connection,
            raw.tls_cert_file,
            raw.tls_key_file,
            raw.dsn.as_ref().map(|d| d.span()),
        )?;
        let mut source = SourceSettings::new(name, connection);
        source.defined_at = Some(self.location(span.start));
        source.poll_interval = self.duration(
            raw.poll_interval,
            "poll_interval",
            DEFAULT_POLL_INTERVAL,
            MIN_POLL_INTERVAL,
        )?;
        source.connect_timeout = self.duration(
            raw.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
            Duration::from_millis(100),
        )?;
        source.statement_timeout = self.duration(
            raw.statement_timeout,
            "statement_timeout",
            DEFAULT_STATEMENT_TIMEOUT,
            Duration::from_millis(100),
        )?;
        source.reconnect_max_backoff = self.duration(
            raw.reconnect_max_backoff,
            "reconnect_max_backoff",
            DEFAULT_RECONNECT_MAX_BACKOFF,
            Duration::from_millis(100),
        )?;
        Ok(source)
    }

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
    pub(super) fn duration(
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
        super::limits::check_max(key, d).map_err(|e| self.err(value, e))?;
        Ok(d)
    }
}
