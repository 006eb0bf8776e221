//! Config errors that say where (`FILE:LINE:COL`), what is wrong, and how to fix it.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read the config file: {source}; check the path and its permissions", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something in the file is wrong; `message` says what and how to fix it.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// The environment-only configuration (no config file) is unusable.
    #[error("{0}")]
    Environment(String),
}

impl ConfigError {
    /// An error located at a byte span of `source` (the file's text).
    pub(crate) fn at(
        path: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = span
            .map(|span| line_column(source, span.start))
            .unwrap_or((1, 1));
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error at a [`super::Location`] (found after parsing: an alert rule, a duplicate
    /// across files).
    pub fn located(at: &super::Location, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: at.path.clone(),
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }

    /// Translate a TOML/serde error into our form, with a suggestion for misspelt keys.
    pub(crate) fn from_toml(path: &Path, source: &str, err: &toml::de::Error) -> Self {
        let message = improve_message(err.message());
        ConfigError::at(path, source, err.span(), message)
    }
}

pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// serde says "unknown field `pol_interval`, expected one of `name`, `dsn`, ...". Operators
/// want to hear which key they probably meant.
pub(crate) fn improve_message(message: &str) -> String {
    let message = message.trim();
    for (prefix, what) in [("unknown field ", "key"), ("unknown variant ", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let mut quoted = rest.split('`').skip(1).step_by(2);
        let Some(unknown) = quoted.next() else {
            continue;
        };
        let candidates: Vec<&str> = quoted.collect();
        let best = candidates
            .iter()
            .map(|c| (strsim::jaro_winkler(unknown, c), *c))
            .filter(|(score, _)| *score >= 0.75)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let valid = candidates
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return match best {
            Some((_, near)) => {
                format!("unknown {what} `{unknown}`; did you mean `{near}`? (valid here: {valid})")
            }
            None if candidates.is_empty() => {
                format!("unknown {what} `{unknown}`; remove it (this table takes no {what}s)")
            }
            None => format!("unknown {what} `{unknown}`; valid here: {valid}"),
        };
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("missing required key `{field}`; add `{field} = ...` to this table");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        assert_eq!(line_column(src, 9), (2, 4));
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let m = improve_message(
            "unknown field `pol_interval`, expected one of `name`, `dsn`, `poll_interval`",
        );
        assert!(
            m.starts_with("unknown key `pol_interval`; did you mean `poll_interval`?"),
            "{m}"
        );
        let m = improve_message("unknown field `zzz`, expected one of `name`, `dsn`");
        assert_eq!(m, "unknown key `zzz`; valid here: `name`, `dsn`");
        let m = improve_message("unknown variant `jsno`, expected `text` or `json`");
        assert!(m.contains("did you mean `json`?"), "{m}");
    }

    #[test]
    fn missing_fields_say_how_to_fix() {
        assert_eq!(
            improve_message("missing field `name`"),
            "missing required key `name`; add `name = ...` to this table"
        );
    }
}
