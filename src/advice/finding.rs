//! The vocabulary of the schema guard: a [`Finding`] is one verdict about one object of one
//! database (an index, a constraint, a sequence, a migration, a statement), with the SQL to act
//! on. The schema-guard collectors report them, the status page and `/api/v1` show them, and
//! `pgvigil advise` prints them. This file imports no sibling.

use serde::Serialize;

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (an unused index, a `SELECT *`).
    Info,
    /// Should be acted on (an index missing for a hot filter, a NOT VALID constraint).
    Warning,
    /// Acts on its own soon or already broke something (a failed migration, a sequence about
    /// to run out, an INVALID index).
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`, as in labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One verdict about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check that found it, a stable snake_case name (`unused_index`, `missing_index`, ...):
    /// the `check` label of its series and the key in `--json`.
    pub check: &'static str,
    /// How urgent it is.
    pub severity: Severity,
    /// The database the object lives in.
    pub database: String,
    /// The object, schema-qualified and quoted as `regclass` prints it (`public.contacts_email_idx`).
    pub object: String,
    /// One sentence with the figures that support it.
    pub message: String,
    /// The SQL (or the command) that acts on it, if there is one.
    pub fix: Option<String>,
}
