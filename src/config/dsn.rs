//! Where a target's connection comes from, and how it is shown without its password.
//!
//! A DSN may come from the config, from an environment variable, or from the libpq environment
//! (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`); a password file overrides the
//! password. Missing pieces are filled the way libpq fills them, so a DSN like
//! `dbname=app` behaves as it would in `psql`. The password never reaches `Debug`, logs or
//! errors: everything user-visible goes through [`ConnectionSpec::describe`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

/// PgBouncer's admin console database.
const ADMIN_DATABASE: &str = "pgbouncer";

/// The libpq environment, captured once so tests can supply their own.
#[derive(Debug, Clone, Default)]
pub struct LibpqEnv {
    /// `PGHOST`
    pub host: Option<String>,
    /// `PGPORT`
    pub port: Option<String>,
    /// `PGUSER` (else `USER`)
    pub user: Option<String>,
    /// `PGDATABASE`
    pub database: Option<String>,
    /// `PGPASSWORD`; never printed.
    pub password: Option<String>,
}

impl LibpqEnv {
    /// Read the process environment.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        LibpqEnv {
            host: var("PGHOST"),
            port: var("PGPORT"),
            user: var("PGUSER").or_else(|| var("USER")),
            database: var("PGDATABASE"),
            password: var("PGPASSWORD"),
        }
    }
}

/// The DSN pieces a discovery file may set per group (`__pgvigil_dbname`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnPieces {
    /// The database.
    pub dbname: Option<String>,
    /// The user.
    pub user: Option<String>,
    /// `disable`, `prefer` or `require`.
    pub sslmode: Option<String>,
}

/// How to reach one target.
#[derive(Clone, PartialEq)]
pub struct ConnectionSpec {
    config: tokio_postgres::Config,
    password_file: Option<PathBuf>,
    tls: super::TlsConfig,
    /// Whether the DSN itself named the database (rather than `PGDATABASE` or the user name):
    /// a target whose DSN names one watches only that database unless it has a
    /// `[targets.databases]` table.
    names_database: bool,
}

impl std::fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field("target", &self.describe())
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnectionSpec {
    /// Parse a DSN (URL or `key=value` form) and fill what it leaves out from `env`.
    ///
    /// The error never contains the DSN itself: it may hold a password.
    pub fn parse(dsn: &str, env: &LibpqEnv) -> Result<Self, String> {
        let (rest, files) = super::libpq::split(dsn).map_err(|e| format!("invalid DSN: {e}"))?;
        let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            if let Some(hint) = sslmode_hint(dsn) {
                return format!("invalid DSN: {}; {hint}", cause(&e));
            }
            format!(
                "invalid DSN: {}; use a URL like postgres://user@host:5432/dbname or key=value pairs like \"host=db port=5432 user=pgvigil dbname=app\"",
                cause(&e)
            )
        })?;
        Ok(Self::with_defaults(config, env).with_tls_files(files))
    }

    /// Parse the DSN of a PgBouncer admin console: the database is always `pgbouncer`, the
    /// special database PgBouncer answers `SHOW` commands in, so a DSN that leaves it out gets
    /// it, whatever `PGDATABASE` says, and one that names another database is an error.
    pub fn parse_admin(dsn: &str, env: &LibpqEnv) -> Result<Self, String> {
        let (rest, files) = super::libpq::split(dsn).map_err(|e| format!("invalid DSN: {e}"))?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            if let Some(hint) = sslmode_hint(dsn) {
                return format!("invalid DSN: {}; {hint}", cause(&e));
            }
            format!(
                "invalid DSN: {}; use a URL like postgres://user@host:6432/pgbouncer or key=value pairs like \"host=bouncer port=6432 user=pgvigil dbname=pgbouncer\"",
                cause(&e)
            )
        })?;
        match config.get_dbname() {
            None => {
                config.dbname(ADMIN_DATABASE);
            }
            Some(ADMIN_DATABASE) => {}
            Some(other) => {
                return Err(format!(
                    "database \"{other}\" is not PgBouncer's admin console; pgvigil reads PgBouncer's SHOW commands from the special database \"{ADMIN_DATABASE}\", so write .../{ADMIN_DATABASE} or dbname={ADMIN_DATABASE} (or leave the database out)"
                ));
            }
        }
        Ok(Self::with_defaults(config, env).with_tls_files(files))
    }

    /// The DSN's `sslcert` / `sslkey` / `sslrootcert` as the TLS settings they stand for.
    fn with_tls_files(mut self, files: super::libpq::DsnTlsFiles) -> Self {
        self.tls.cert_file = files.cert.map(PathBuf::from);
        self.tls.key_file = files.key.map(PathBuf::from);
        self.tls.ca_file = files.root_cert.map(PathBuf::from);
        self
    }

    /// A discovered target's connection: the `[discovery.defaults]` DSN (`base`, which must
    /// not name a host or port) with the host and port from the discovery file and the pieces
    /// its group overrides.
    pub fn discovered(
        base: &str,
        host: &str,
        port: u16,
        pieces: &DsnPieces,
        env: &LibpqEnv,
    ) -> Result<Self, String> {
        let mut config = if base.trim().is_empty() {
            tokio_postgres::Config::new()
        } else {
            tokio_postgres::Config::from_str(base)
                .map_err(|e| format!("[discovery.defaults] dsn is invalid: {e}"))?
        };
        if !config.get_hosts().is_empty() || !config.get_ports().is_empty() {
            return Err(
                "[discovery.defaults] dsn names a host or port; leave them out: each discovered target's host and port come from its file".to_owned(),
            );
        }
        config.host(host);
        config.port(port);
        if let Some(dbname) = &pieces.dbname {
            config.dbname(dbname);
        }
        if let Some(user) = &pieces.user {
            config.user(user);
        }
        if let Some(mode) = &pieces.sslmode {
            config.ssl_mode(match mode.as_str() {
                "disable" => tokio_postgres::config::SslMode::Disable,
                "prefer" => tokio_postgres::config::SslMode::Prefer,
                "require" => tokio_postgres::config::SslMode::Require,
                other => {
                    return Err(format!(
                        "sslmode \"{other}\" is not one of disable, prefer, require"
                    ));
                }
            });
        }
        Ok(Self::with_defaults(config, env))
    }

    /// A spec from the libpq environment alone.
    pub fn from_env(env: &LibpqEnv) -> Self {
        Self::with_defaults(tokio_postgres::Config::new(), env)
    }

    fn with_defaults(mut config: tokio_postgres::Config, env: &LibpqEnv) -> Self {
        let names_database = config.get_dbname().is_some();
        if config.get_hosts().is_empty() {
            match env.host.as_deref() {
                Some(hosts) => {
                    for host in hosts.split(',') {
                        config.host(host);
                    }
                }
                // libpq's default: the local socket directory if there is one.
                None if Path::new("/var/run/postgresql").is_dir() => {
                    config.host_path("/var/run/postgresql");
                }
                None => {
                    config.host("localhost");
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(port) = env.port.as_deref().and_then(|p| p.parse().ok()) {
                config.port(port);
            }
        }
        if config.get_user().is_none() {
            config.user(env.user.as_deref().unwrap_or("postgres"));
        }
        if config.get_dbname().is_none() {
            let db = env
                .database
                .clone()
                .or_else(|| config.get_user().map(str::to_owned))
                .unwrap_or_else(|| "postgres".to_owned());
            config.dbname(&db);
        }
        if config.get_password().is_none() {
            if let Some(password) = &env.password {
                config.password(password);
            }
        }
        ConnectionSpec {
            config,
            password_file: None,
            tls: super::TlsConfig::default(),
            names_database,
        }
    }

    /// Take the password from this file (read at every connect, so a rotated secret is used
    /// without a restart).
    pub fn set_password_file(&mut self, path: PathBuf) {
        self.password_file = Some(path);
    }

    /// The password file, if any.
    pub fn password_file(&self) -> Option<&Path> {
        self.password_file.as_deref()
    }

    /// Set `tls_ca_file` / `tls_verify`.
    pub fn set_tls(&mut self, tls: super::TlsConfig) {
        self.tls = tls;
    }

    /// How a TLS session is verified (whether TLS is used is [`Self::ssl_mode`]).
    pub fn tls(&self) -> &super::TlsConfig {
        &self.tls
    }

    /// The DSN's `sslmode`.
    pub fn ssl_mode(&self) -> tokio_postgres::config::SslMode {
        self.config.get_ssl_mode()
    }

    /// `user@host:port/dbname`, safe to log.
    pub fn describe(&self) -> String {
        let user = self.config.get_user().unwrap_or("?");
        let hosts = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("?");
        format!("{user}@{hosts}:{port}/{db}")
    }

    /// The user it logs in as.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// Whether the DSN named the database itself (`/app` in a URL, `dbname=app`), rather than
    /// leaving it to `PGDATABASE` or the user name.
    pub fn names_database(&self) -> bool {
        self.names_database
    }

    /// The same connection to another database of the same server (the database sessions).
    pub fn with_dbname(&self, dbname: &str) -> ConnectionSpec {
        let mut spec = self.clone();
        spec.config.dbname(dbname);
        spec
    }

    /// The tokio-postgres config to connect with, with session settings applied and the
    /// password file read now.
    pub fn connect_config(
        &self,
        connect_timeout: Duration,
    ) -> Result<tokio_postgres::Config, String> {
        let mut config = self.config.clone();
        config.application_name("pgvigil");
        config.connect_timeout(connect_timeout);
        if let Some(path) = &self.password_file {
            config.password(read_password_file(path)?);
        }
        Ok(config)
    }
}

/// tokio-postgres's parse error with its cause ("invalid connection string: unknown option
/// `foo`"): its `Display` alone names neither the key nor the value. Never the DSN itself.
fn cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// libpq's verifying sslmodes, which tokio-postgres rejects, translated to pgvigil's keys.
fn sslmode_hint(dsn: &str) -> Option<&'static str> {
    if dsn.contains("verify-full") {
        Some(
            "write sslmode=require and tls_verify = \"full\" (the default) in the target instead of sslmode=verify-full",
        )
    } else if dsn.contains("verify-ca") {
        Some(
            "write sslmode=require and tls_verify = \"ca\" in the target instead of sslmode=verify-ca",
        )
    } else {
        None
    }
}

/// Read a password file: the first line, without its line ending.
pub(super) fn read_password_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read password_file {}: {e}; check that it exists and that pgvigil's user may read it",
            path.display()
        )
    })?;
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err(format!(
            "password_file {} is empty; put the password on its first line",
            path.display()
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> LibpqEnv {
        LibpqEnv {
            host: Some("db.example".into()),
            port: Some("6543".into()),
            user: Some("monitor".into()),
            database: None,
            password: Some("envsecret".into()),
        }
    }

    #[test]
    fn describe_never_shows_the_password() {
        let spec =
            ConnectionSpec::parse("postgres://app:hunter2@10.0.0.5:5433/shop", &env()).unwrap();
        assert_eq!(spec.describe(), "app@10.0.0.5:5433/shop");
        let debug = format!("{spec:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn missing_parts_come_from_the_libpq_environment() {
        let spec = ConnectionSpec::parse("dbname=shop", &env()).unwrap();
        assert_eq!(spec.describe(), "monitor@db.example:6543/shop");
        let spec = ConnectionSpec::from_env(&env());
        // libpq: the database defaults to the user name.
        assert_eq!(spec.describe(), "monitor@db.example:6543/monitor");
        let cfg = spec.connect_config(Duration::from_secs(1)).unwrap();
        assert_eq!(cfg.get_password(), Some(&b"envsecret"[..]));
        assert_eq!(cfg.get_application_name(), Some("pgvigil"));
    }

    #[test]
    fn admin_console_dsn_defaults_to_the_pgbouncer_database() {
        let spec = ConnectionSpec::parse_admin("host=b port=6432", &env()).unwrap();
        assert_eq!(spec.describe(), "monitor@b:6432/pgbouncer");
        let mut env = env();
        env.database = Some("app".into());
        let spec = ConnectionSpec::parse_admin("postgres://u@b:6432", &env).unwrap();
        assert_eq!(spec.dbname(), "pgbouncer");
        let err = ConnectionSpec::parse_admin("postgres://u@b:6432/app", &env).unwrap_err();
        assert!(err.contains("not PgBouncer's admin console"), "{err}");
    }

    #[test]
    fn whether_the_dsn_names_the_database_is_kept() {
        let mut env = env();
        env.database = Some("fromenv".into());
        let named = ConnectionSpec::parse("postgres://u@h/app", &env).unwrap();
        assert!(named.names_database());
        let unnamed = ConnectionSpec::parse("host=h user=u", &env).unwrap();
        assert!(!unnamed.names_database());
        assert_eq!(unnamed.dbname(), "fromenv");
        let other = named.with_dbname("billing");
        assert_eq!(other.describe(), "u@h:5432/billing");
        assert_eq!(named.dbname(), "app");
    }

    #[test]
    fn invalid_dsn_error_does_not_echo_the_dsn() {
        let err =
            ConnectionSpec::parse("postgres://u:topsecret@host:notaport/db", &env()).unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
        assert!(err.starts_with("invalid DSN"), "{err}");
    }

    /// Defect 7 of issue 16: an unknown sslmode and port 99999 both got "invalid connection
    /// string".
    #[test]
    fn dsn_errors_name_the_key_and_the_value() {
        let err = ConnectionSpec::parse("host=h sslmode=bogus", &env()).unwrap_err();
        assert!(err.starts_with("invalid DSN: sslmode \"bogus\""), "{err}");
        let err = ConnectionSpec::parse("postgres://u:pw@h:99999/db", &env()).unwrap_err();
        assert!(err.starts_with("invalid DSN: port \"99999\""), "{err}");
        let err = ConnectionSpec::parse_admin("host=h port=0", &env()).unwrap_err();
        assert!(err.starts_with("invalid DSN: port \"0\""), "{err}");
        let err = ConnectionSpec::parse("host=h colour=blue", &env()).unwrap_err();
        assert!(err.contains("unknown option `colour`"), "{err}");
    }

    #[test]
    fn dsn_tls_files_become_tls_settings() {
        let spec = ConnectionSpec::parse(
            "host=h sslmode=require sslcert=/c.pem sslkey=/k.pem sslrootcert=/ca.pem",
            &env(),
        )
        .unwrap();
        assert_eq!(spec.tls().cert_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(spec.tls().key_file.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(spec.tls().ca_file.as_deref(), Some(Path::new("/ca.pem")));
    }

    #[test]
    fn libpq_verifying_sslmodes_point_at_tls_verify() {
        let err = ConnectionSpec::parse("host=h sslmode=verify-full", &env()).unwrap_err();
        assert!(err.contains("tls_verify = \"full\""), "{err}");
        let err = ConnectionSpec::parse("postgres://h/db?sslmode=verify-ca", &env()).unwrap_err();
        assert!(err.contains("tls_verify = \"ca\""), "{err}");
    }

    #[test]
    fn password_file_first_line_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut spec = ConnectionSpec::parse("host=h user=u dbname=d", &env()).unwrap();
        spec.set_password_file(path.clone());
        let cfg = spec.connect_config(Duration::from_secs(1)).unwrap();
        assert_eq!(cfg.get_password(), Some(&b"s3cret"[..]));
        std::fs::write(&path, "").unwrap();
        assert!(
            spec.connect_config(Duration::from_secs(1))
                .unwrap_err()
                .contains("is empty")
        );
    }
}
