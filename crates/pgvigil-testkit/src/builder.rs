//! [`ClusterBuilder`]: a private cluster with a chosen version and configuration.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cluster::TestCluster;
use crate::private::{ClusterSpec, PrivateCluster};
use crate::versions::{bindir_for_version, default_bindir};

/// Names of the TLS files [`ClusterBuilder::ssl`] and [`ClusterBuilder::ssl_ca`] copy into the
/// data directory (PostgreSQL's default names).
const SSL_CERT: &str = "server.crt";
const SSL_KEY: &str = "server.key";
const SSL_CA: &str = "root.crt";

/// Builds a private [`TestCluster`] that differs from the default one; get one from
/// [`TestCluster::builder`].
///
/// The cluster is a copy of the same cached template as every other cluster of its version
/// (so a builder costs no `initdb`); the settings go into the cluster's own include file and
/// the `pg_hba.conf` lines into its copy of that file before the server first starts, so
/// settings that need a restart (`archive_mode`, `ssl`, `shared_buffers`) take effect at once.
///
/// ```no_run
/// use pgvigil_testkit::TestCluster;
///
/// // A PostgreSQL 13 server whose archiver fails every segment.
/// let cluster = TestCluster::builder()
///     .version(13)
///     .setting("archive_mode", "on")
///     .setting("archive_command", "false")
///     .start();
/// cluster.psql("postgres", "SELECT pg_switch_wal()");
/// ```
///
/// A client-certificate set-up (the cluster's own `psql` sessions connect without TLS, so
/// they still get in through the template's `host all all 127.0.0.1/32 trust`):
///
/// ```no_run
/// # use std::path::Path;
/// use pgvigil_testkit::TestCluster;
///
/// # let certs = Path::new("/tmp/certs");
/// let cluster = TestCluster::builder()
///     .ssl(&certs.join("server.crt"), &certs.join("server.key"))
///     .ssl_ca(&certs.join("ca.crt"))
///     .hba_line("hostssl all all 127.0.0.1/32 cert clientcert=verify-full")
///     .start();
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until .start()"]
pub struct ClusterBuilder {
    version: Option<u32>,
    settings: Vec<(String, String)>,
    hba_lines: Vec<String>,
    /// Name in the data directory, file to copy there at start.
    files: Vec<(String, PathBuf)>,
}

impl ClusterBuilder {
    /// Runs PostgreSQL major version `major` (e.g. `18`) instead of the default (see the crate
    /// docs). A version that is not installed makes [`start`](Self::start) panic with a
    /// message saying to run `scripts/install-test-deps.sh`.
    pub fn version(mut self, major: u32) -> ClusterBuilder {
        self.version = Some(major);
        self
    }

    /// Sets `name = 'value'` in `postgresql.conf`. `value` is written as a quoted
    /// configuration string (which the server accepts for settings of every type: `"on"`,
    /// `"64MB"`, `"false"` for `archive_command`), so give it unquoted. Later settings override
    /// earlier ones and the template's; `ALTER SYSTEM` overrides them all. A setting the server
    /// does not know makes [`start`](Self::start) panic with the server log.
    pub fn setting(mut self, name: &str, value: &str) -> ClusterBuilder {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `line` to the top of `pg_hba.conf`, after the lines added before it and before the
    /// template's, which trust every local and 127.0.0.1 connection (replication included).
    /// The first matching line wins, so a line here overrides the template's for the
    /// connections it matches.
    ///
    /// The testkit's own `psql` sessions connect to 127.0.0.1 as `postgres` to the
    /// `postgres` database (or a test database) without TLS: keep them matched by a `trust`
    /// line, e.g. with `hostssl` lines or lines for other users.
    pub fn hba_line(mut self, line: &str) -> ClusterBuilder {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// Turns TLS on with this certificate and private key (PEM files, read by
    /// [`start`](Self::start) and copied into the data directory as `server.crt` and
    /// `server.key`, mode 0600): `ssl = on`, `ssl_cert_file`, `ssl_key_file`.
    pub fn ssl(self, cert: &Path, key: &Path) -> ClusterBuilder {
        self.file_setting(SSL_CERT, cert, "ssl_cert_file")
            .file_setting(SSL_KEY, key, "ssl_key_file")
            .setting("ssl", "on")
    }

    /// Sets the CA certificates that client certificates are checked against (`ssl_ca_file`;
    /// copied into the data directory as `root.crt`), for `cert` authentication and
    /// `clientcert=verify-ca|verify-full` lines. Use with [`ssl`](Self::ssl).
    pub fn ssl_ca(self, ca: &Path) -> ClusterBuilder {
        self.file_setting(SSL_CA, ca, "ssl_ca_file")
    }

    /// Copies `source` into the data directory as `name` at start and points `setting` at it.
    fn file_setting(mut self, name: &str, source: &Path, setting: &str) -> ClusterBuilder {
        self.files.retain(|(n, _)| n != name);
        self.files.push((name.to_owned(), source.to_path_buf()));
        self.setting(setting, name)
    }

    /// Starts the cluster (always private, whatever `PGVIGIL_TEST_DSN` says) and waits until it
    /// accepts connections.
    ///
    /// # Panics
    ///
    /// If the version is not installed, a TLS file cannot be read, or the server does not
    /// start (the message has the tail of the server log, which names a bad setting or
    /// `pg_hba.conf` line).
    pub fn start(self) -> TestCluster {
        let bindir = match self.version {
            Some(major) => bindir_for_version(major).unwrap_or_else(|e| panic!("{e}")),
            None => default_bindir(),
        };
        let files = self
            .files
            .iter()
            .map(|(name, source)| {
                let contents = fs::read(source).unwrap_or_else(|e| {
                    panic!("cannot read {} (for {name}): {e}", source.display())
                });
                (name.clone(), contents)
            })
            .collect();
        let spec = ClusterSpec {
            settings: self.settings,
            hba_lines: self.hba_lines,
            files,
        };
        TestCluster::from_private(PrivateCluster::create(bindir, spec))
    }
}
