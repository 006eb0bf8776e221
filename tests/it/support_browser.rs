//! Debian's chromium, headless, as the status-page tests drive it: one process per page load
//! (`--dump-dom` for the DOM after parsing and any script, `--screenshot` for the README's
//! pictures), console messages read from its log on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the browser made of one page.
#[derive(Debug)]
pub struct Loaded {
    /// The DOM as serialised after the load (scripts, had any run, would have changed it).
    pub dom: String,
    /// Every console message the page produced (errors, CSP violations, failed loads).
    pub console: Vec<String>,
}

/// The chromium binary.
///
/// # Panics
///
/// If it is not installed, saying how to install it.
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("chromium not found: run scripts/install-test-deps.sh (installs Debian's chromium)");
}

fn run(args: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    // `timeout` bounds a browser that hangs; Debian's wrapper script execs the real binary.
    let output = Command::new("timeout")
        .arg("60")
        .arg(chromium())
        .args([
            "--headless",
            // Root in the test containers: chromium's sandbox needs user namespaces.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("cannot run chromium");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "chromium {args:?} failed ({}): {stderr}",
        output.status
    );
    (stdout, stderr)
}

fn console_of(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect()
}

/// Load `url` and return its DOM and console messages. Blocking: call it from
/// `spawn_blocking` while the daemon runs on the test's runtime.
pub fn load(url: &str) -> Loaded {
    let (dom, stderr) = run(&["--dump-dom".to_owned(), url.to_owned()]);
    Loaded {
        dom,
        console: console_of(&stderr),
    }
}

/// Save a screenshot of `url` to `path` (PNG), `width` × `height` CSS pixels, in the dark
/// colour scheme when `dark`.
pub fn screenshot(url: &str, path: &Path, (width, height): (u32, u32), dark: bool) {
    let mut args = vec![
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
    ];
    if dark {
        args.push("--force-dark-mode".to_owned());
    }
    args.push(url.to_owned());
    let (_, stderr) = run(&args);
    let console = console_of(&stderr);
    assert!(console.is_empty(), "{url}: {console:?}");
    assert!(
        std::fs::metadata(path).is_ok_and(|m| m.len() > 1000),
        "no screenshot at {}: {stderr}",
        path.display()
    );
}
