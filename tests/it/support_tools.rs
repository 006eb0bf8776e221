//! The tools scripts/install-test-deps.sh installs outside `PATH`: the pinned Python tools of
//! scripts/python-tools.txt (Grafana Foundation SDK, mypy, hadolint) in a venv of their own.

use std::path::PathBuf;

/// The venv: `$PGVIGIL_PYTHON_TOOLS`, by default `~/.cache/pgvigil/python-tools` (the same rule
/// as the install script's).
pub fn python_tools() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGVIGIL_PYTHON_TOOLS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set; set PGVIGIL_PYTHON_TOOLS");
    PathBuf::from(home).join(".cache/pgvigil/python-tools")
}

/// `bin/<name>` of the venv.
///
/// # Panics
///
/// If it is not there, saying how to install it.
pub fn python_tool(name: &str) -> PathBuf {
    let path = python_tools().join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/install-test-deps.sh, which installs scripts/python-tools.txt \
         into {}",
        path.display(),
        python_tools().display()
    );
    path
}
