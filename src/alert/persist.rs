//! The alert state file: what is pending or firing since when, and what was last notified, so
//! a restart neither forgets a firing alert (it is still resolved later) nor re-sends
//! everything at once.
//!
//! Written atomically (a temporary file in the same directory, fsync, rename), so a crash
//! mid-write leaves the previous state. A file that cannot be read back is moved aside as
//! `alerts.json.corrupt` and reported; pgvigil then starts with no alerts rather than not at all.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{Alert, AlertBook, ResolvedAlert};

/// File name inside `[alerts] state_dir`.
pub const FILE_NAME: &str = "alerts.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    alerts: Vec<Alert>,
    resolved: Vec<ResolvedAlert>,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading, writing or renaming failed.
    #[error(
        "alert state file {}: {source}; make [alerts] state_dir writable by pgvigil (alerts still work, but a restart forgets them)",
        path.display()
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `state_dir` (or a directory above it) is a file.
    #[error(
        "[alerts] state_dir {} is not a directory ({} is a file); point state_dir at a directory pgvigil may write, e.g. \"/var/lib/pgvigil\", or move the file away (alerts still work, but a restart forgets them)",
        dir.display(),
        file.display()
    )]
    NotADirectory {
        /// The configured directory.
        dir: PathBuf,
        /// The file in its way (the directory itself, or one above it).
        file: PathBuf,
    },
    /// The file is not a state file pgvigil understands.
    #[error(
        "alert state file {} is unreadable ({reason}); moved it aside to {} and started with no alerts",
        path.display(),
        aside.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where it was moved.
        aside: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The state file in one directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// The store for `dir` (created on first save if missing).
    pub fn new(dir: &Path) -> Self {
        StateStore {
            path: dir.join(FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, when it or a directory above it is a regular file: reading then says
    /// "Not a directory" and creating says "File exists", so both report this instead.
    fn blocked(&self) -> Option<PersistError> {
        let dir = self.path.parent()?;
        let file = dir
            .ancestors()
            .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()))?;
        Some(PersistError::NotADirectory {
            dir: dir.to_owned(),
            file: file.to_owned(),
        })
    }

    /// Check that the state file can be written now (what `check-config` runs): the directory
    /// is created if missing, a probe file written and removed.
    pub fn probe(&self) -> Result<(), PersistError> {
        if let Some(blocked) = self.blocked() {
            return Err(blocked);
        }
        let probe = self.path.with_extension("json.probe");
        let io = |source| PersistError::Io {
            path: probe.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&probe, b"").map_err(io)?;
        std::fs::remove_file(&probe).map_err(io)
    }

    /// Read the saved book. A missing file is an empty book; a corrupt one is moved aside,
    /// reported, and replaced by an empty book.
    pub fn load(&self) -> (AlertBook, Option<PersistError>) {
        if let Some(blocked) = self.blocked() {
            return (AlertBook::default(), Some(blocked));
        }
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (AlertBook::default(), None);
            }
            Err(source) => {
                return (
                    AlertBook::default(),
                    Some(PersistError::Io {
                        path: self.path.clone(),
                        source,
                    }),
                );
            }
        };
        let reason = match serde_json::from_slice::<StateFile>(&text) {
            Ok(file) if file.version == VERSION => {
                return (AlertBook::restore(file.alerts, file.resolved), None);
            }
            Ok(file) => format!("version {} is not {VERSION}", file.version),
            Err(e) => e.to_string(),
        };
        let aside = self.path.with_extension("json.corrupt");
        if let Err(source) = std::fs::rename(&self.path, &aside) {
            return (
                AlertBook::default(),
                Some(PersistError::Io {
                    path: self.path.clone(),
                    source,
                }),
            );
        }
        (
            AlertBook::default(),
            Some(PersistError::Corrupt {
                path: self.path.clone(),
                aside,
                reason,
            }),
        )
    }

    /// Write the book atomically.
    pub fn save(&self, book: &AlertBook) -> Result<(), PersistError> {
        let file = StateFile {
            version: VERSION,
            alerts: book.active().cloned().collect(),
            resolved: book.resolved().cloned().collect(),
        };
        let io = |source| PersistError::Io {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        if let Some(blocked) = self.blocked() {
            return Err(blocked);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::alert::state::RuleSettings;
    use crate::alert::{Condition, Evaluation, Severity};

    fn book() -> AlertBook {
        let mut book = AlertBook::default();
        let rule = RuleSettings {
            alertname: "PgvigilTargetDown",
            severity: Severity::Critical,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            runbook_url: None,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        book.apply(
            "main",
            &rule,
            Evaluation::Holds(vec![Condition::new("down", "it is down")]),
            now,
        );
        book.apply(
            "old",
            &rule,
            Evaluation::Holds(vec![Condition::new("a", "b")]),
            now,
        );
        book.apply("old", &rule, Evaluation::Holds(vec![]), now);
        book
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("sub"));
        let (empty, err) = store.load();
        assert!(err.is_none());
        assert_eq!(empty, AlertBook::default());
        let book = book();
        store.save(&book).unwrap();
        let (loaded, err) = store.load();
        assert!(err.is_none(), "{err:?}");
        assert_eq!(loaded, book);
        assert!(!store.path().with_extension("json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), b"{not json").unwrap();
        let (loaded, err) = store.load();
        assert_eq!(loaded, AlertBook::default());
        let msg = err.unwrap().to_string();
        assert!(msg.contains("moved it aside"), "{msg}");
        assert!(dir.path().join("alerts.json.corrupt").exists());
        // The next save works again.
        store.save(&book()).unwrap();
        assert!(store.load().1.is_none());
    }

    #[test]
    fn unwritable_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        // A directory below a regular file cannot exist, even for root.
        let store = StateStore::new(&blocker.join("state"));
        let msg = store.save(&book()).unwrap_err().to_string();
        assert!(msg.contains("state_dir"), "{msg}");
    }

    /// Defect 7 of issue 16: a state_dir that is a file said "File exists" in the API and
    /// "Not a directory" in the log. Load, save and probe now say the same, naming the file.
    #[test]
    fn a_state_dir_that_is_a_file_says_so_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, b"").unwrap();
        let store = StateStore::new(&file);
        let saved = store.save(&book()).unwrap_err().to_string();
        let loaded = store.load().1.unwrap().to_string();
        let probed = store.probe().unwrap_err().to_string();
        assert_eq!(saved, loaded);
        assert_eq!(saved, probed);
        assert!(saved.contains("is not a directory"), "{saved}");
        assert!(
            saved.contains(&format!("({} is a file)", file.display())),
            "{saved}"
        );
        // A writable directory probes fine and keeps nothing behind.
        let store = StateStore::new(&dir.path().join("new"));
        store.probe().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("new")).unwrap().count(),
            0
        );
    }
}
