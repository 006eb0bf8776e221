//! The schema guard's findings and the one-shot `pgvigil advise` report built from them.
//!
//! [`CHECKS`] lists every schema-guard check that reports [`Finding`]s for a database: each
//! is a function of a [`PollContext`] (the database's session, the target's config, the
//! server), so the daemon's collectors and `pgvigil advise` share one implementation.
//! [`report`] runs them for every target and watched database of a config and renders the
//! result as text or JSON.

pub mod finding;
pub mod report;

pub use finding::{Finding, Severity};

use crate::collect::{BoxFuture, CollectError, PollContext};

/// One schema-guard check, as `pgvigil advise` runs it.
#[derive(Debug)]
pub struct Check {
    /// The collector (or module) it belongs to, named in the report when it fails.
    pub name: &'static str,
    /// The `check` names of the findings it may report.
    pub checks: &'static [&'static str],
    /// The oldest `server_version_num` it runs on.
    pub min_version: i32,
    /// Its findings in the database of the context.
    pub findings: FindingsFn,
}

/// What a check runs: its findings in the database of the context.
pub type FindingsFn =
    for<'a> fn(&'a PollContext<'a>) -> BoxFuture<'a, Result<Vec<Finding>, CollectError>>;

/// Every schema-guard check, in report order (each helper of issue 14 adds its line).
pub const CHECKS: &[Check] = &[
    Check {
        name: "migrations",
        checks: &[
            "migration_failed",
            "migration_table_unreadable",
            "invalid_index",
            "not_valid_constraint",
            "rewrite_in_progress",
        ],
        min_version: 130000,
        findings: migrations_findings,
    },
    Check {
        name: "indexes",
        checks: &crate::collect::indexes::verdicts::CHECKS,
        min_version: 130000,
        findings: crate::collect::indexes::findings,
    },
    Check {
        name: "advice",
        checks: &["missing_index", "select_star", "unbounded_select"],
        min_version: 130000,
        findings: advice_findings,
    },
];

/// The `migrations` collector's findings: migration records and leftovers.
fn migrations_findings<'a>(
    ctx: &'a PollContext<'a>,
) -> BoxFuture<'a, Result<Vec<Finding>, CollectError>> {
    Box::pin(crate::collect::migrations::findings(
        ctx.client,
        &ctx.target.migrations,
    ))
}

/// The `advice` collector's findings: missing indexes and lints of the top statements
/// (needs pg_stat_statements in the database; the report names the fix when it is missing).
fn advice_findings<'a>(
    ctx: &'a PollContext<'a>,
) -> BoxFuture<'a, Result<Vec<Finding>, CollectError>> {
    Box::pin(crate::collect::advice::findings(
        ctx.client,
        ctx.database,
        &ctx.target.advice,
    ))
}
