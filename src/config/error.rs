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
        let spanned = err
            .span()
            .and_then(|span| source.get(span))
            .unwrap_or_default();
        let key = err.span().and_then(|span| key_on_line(source, span.start));
        let message = improve_located_message(err.message(), spanned, key.as_deref());
        ConfigError::at(path, source, err.span(), message)
    }

    /// A file whose bytes are not UTF-8, located at the first bad byte.
    pub(crate) fn not_utf8(path: &Path, bytes: &[u8], err: &std::str::Utf8Error) -> Self {
        let valid = &bytes[..err.valid_up_to()];
        // The prefix is valid UTF-8 by definition.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        let bad = bytes.get(err.valid_up_to()).copied().unwrap_or_default();
        ConfigError::at(
            path,
            prefix,
            Some(prefix.len()..prefix.len()),
            format!(
                "the file is not UTF-8 text (byte 0x{bad:02x} here); TOML files must be UTF-8: re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
            ),
        )
    }
}

/// The key of the `key = value` line holding byte `offset`, if that line has one.
fn key_on_line(source: &str, offset: usize) -> Option<String> {
    let offset = offset.min(source.len());
    let start = source.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let end = source
        .get(offset..)?
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    let line = source.get(start..end)?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_owned())
}

/// [`improve_message`], plus what only the error's location tells: the repeated key's name,
/// the key whose integer does not fit.
fn improve_located_message(message: &str, spanned: &str, key: Option<&str>) -> String {
    let trimmed = message.trim();
    if trimmed == "duplicate key" {
        let name = spanned.trim().trim_matches(|c| c == '[' || c == ']');
        return if name.is_empty() {
            "duplicate key; every key (and every [table]) may appear once: remove or merge the repeated one".to_owned()
        } else {
            format!(
                "duplicate key `{name}`: it is already set earlier in the same table; keep one of them (for a table, merge the two [{name}] sections)"
            )
        };
    }
    if trimmed.starts_with("invalid type: integer `") && trimmed.contains(" as i128") {
        let number = trimmed
            .split('`')
            .nth(1)
            .unwrap_or(spanned.trim())
            .to_owned();
        let key = key.unwrap_or("this key");
        return format!(
            "{key} = {number} is too large for a whole number (at most 9223372036854775807); use a value in the key's range (see config/pgvigil.example.toml)"
        );
    }
    improve_message(message)
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
    fn duplicate_keys_and_oversized_integers_name_the_key() {
        let path = Path::new("x.toml");
        let msg = |text: &str| {
            let err = toml::from_str::<toml::Table>(text).unwrap_err();
            ConfigError::from_toml(path, text, &err).to_string()
        };
        assert_eq!(
            msg("[server]\nlisten = \"a\"\nlisten = \"b\"\n"),
            "x.toml:3:1: duplicate key `listen`: it is already set earlier in the same table; keep one of them (for a table, merge the two [listen] sections)"
        );
        assert!(
            msg("[server]\n[server]\n").starts_with("x.toml:2:2: duplicate key `server`"),
            "{}",
            msg("[server]\n[server]\n")
        );
        let err = crate::config::Config::parse(
            path,
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n[targets.statements]\ntop_k = 99999999999999999999\n",
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "x.toml:5:9: top_k = 99999999999999999999 is too large for a whole number"
            ),
            "{err}"
        );
        assert!(!err.contains("i128"), "{err}");
    }

    #[test]
    fn non_utf8_bytes_are_located() {
        let mut bytes = b"[server]\nlisten = \"caf".to_vec();
        bytes.extend_from_slice(&[0xe9, b'"', b'\n']);
        let err = std::str::from_utf8(&bytes).unwrap_err();
        let msg = ConfigError::not_utf8(Path::new("x.toml"), &bytes, &err).to_string();
        assert!(
            msg.starts_with("x.toml:2:14: the file is not UTF-8 text (byte 0xe9 here)"),
            "{msg}"
        );
    }

    #[test]
    fn missing_fields_say_how_to_fix() {
        assert_eq!(
            improve_message("missing field `name`"),
            "missing required key `name`; add `name = ...` to this table"
        );
    }
}
