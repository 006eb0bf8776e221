//! `pgvigil advise`: connect to every target (and each watched database of it), run every
//! check of [`super::CHECKS`], and print what they found grouped by severity with the SQL to
//! act on, or as JSON. The sessions are set up like the daemon's (`statement_timeout`,
//! `lock_timeout`), so a report never queues behind a migration's lock for long.

use serde::Serialize;
use tokio_postgres::Client;

use super::{CHECKS, Finding, Severity};
use crate::collect::{CollectError, PollContext, ServerInfo, describe_pg_error};
use crate::config::TargetConfig;

/// The report of every target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Advice {
    /// One entry per target, in config order.
    pub targets: Vec<TargetAdvice>,
}

/// The report of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetAdvice {
    /// Its name.
    pub target: String,
    /// `user@host:port/db`.
    pub connection: String,
    /// Why it could not be reached, if it could not.
    pub error: Option<String>,
    /// Each watched database pgvigil could enter.
    pub databases: Vec<DatabaseAdvice>,
}

/// The report of one database.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseAdvice {
    /// Its name.
    pub database: String,
    /// What the checks found, most severe first.
    pub findings: Vec<Finding>,
    /// The checks that failed (or the database that could not be entered), with why.
    pub errors: Vec<CheckFailure>,
    /// The checks that do not apply in this database (not an error), with why.
    pub not_applicable: Vec<CheckFailure>,
}

/// A check that could not run, or does not apply.
#[derive(Debug, Clone, Serialize)]
pub struct CheckFailure {
    /// The check (`indexes`, ...) or `connect`.
    pub check: &'static str,
    /// Why, with the fix where there is one.
    pub error: String,
}

impl Advice {
    /// Whether every target and database was reached (the exit status is 2 otherwise).
    pub fn reached_everything(&self) -> bool {
        self.targets.iter().all(|t| {
            t.error.is_none()
                && t.databases
                    .iter()
                    .all(|d| d.errors.iter().all(|e| e.check != "connect"))
        })
    }

    /// The report for people: per target and database, the findings by severity, each with
    /// its fix.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            out.push_str(&format!("target {} ({})\n", t.target, t.connection));
            if let Some(e) = &t.error {
                out.push_str(&format!("  cannot connect: {e}\n"));
                continue;
            }
            for d in &t.databases {
                database_text(&mut out, d);
            }
        }
        out
    }
}

fn database_text(out: &mut String, d: &DatabaseAdvice) {
    let count = |s| d.findings.iter().filter(|f| f.severity == s).count();
    if d.findings.is_empty() {
        out.push_str(&format!("  database {}: no findings\n", d.database));
    } else {
        out.push_str(&format!(
            "  database {}: {} finding{} ({} critical, {} warning, {} info)\n",
            d.database,
            d.findings.len(),
            if d.findings.len() == 1 { "" } else { "s" },
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Info)
        ));
    }
    for severity in [Severity::Critical, Severity::Warning, Severity::Info] {
        let group: Vec<&Finding> = d
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .collect();
        if group.is_empty() {
            continue;
        }
        out.push_str(&format!("    {}:\n", severity.as_str().to_uppercase()));
        for f in group {
            out.push_str(&format!(
                "      [{}] {}: {}\n",
                f.check, f.object, f.message
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("        fix: {fix}\n"));
            }
        }
    }
    for e in &d.errors {
        out.push_str(&format!("    {} failed: {}\n", e.check, e.error));
    }
    for n in &d.not_applicable {
        out.push_str(&format!("    {} not applicable: {}\n", n.check, n.error));
    }
}

/// Run every check on every target and watched database, one session at a time.
pub async fn advise(targets: &[TargetConfig]) -> Advice {
    let mut advice = Advice::default();
    for target in targets {
        advice.targets.push(advise_target(target).await);
    }
    advice
}

async fn advise_target(target: &TargetConfig) -> TargetAdvice {
    let mut out = TargetAdvice {
        target: target.name.clone(),
        connection: target.connection.describe(),
        error: None,
        databases: Vec::new(),
    };
    let tls = crate::tls::Connector::new(&target.connection);
    let listed = async {
        let main = open(target, &tls).await?;
        crate::privileges::databases(&main.0, target)
            .await
            .map_err(|e| e.to_string())
    };
    let (enter, refused) = match listed.await {
        Ok(listed) => listed,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    for check in refused.into_iter().filter(|c| c.missing.is_some()) {
        out.databases.push(DatabaseAdvice {
            database: check.database.clone().unwrap_or_default(),
            findings: Vec::new(),
            errors: vec![CheckFailure {
                check: "connect",
                error: check.line(),
            }],
            not_applicable: Vec::new(),
        });
    }
    for datname in enter {
        let config = target.for_database(&datname);
        out.databases
            .push(advise_database(&config, &datname, &tls).await);
    }
    out.databases.sort_by(|a, b| a.database.cmp(&b.database));
    out
}

async fn advise_database(
    config: &TargetConfig,
    datname: &str,
    tls: &crate::tls::Connector,
) -> DatabaseAdvice {
    let mut out = DatabaseAdvice {
        database: datname.to_owned(),
        findings: Vec::new(),
        errors: Vec::new(),
        not_applicable: Vec::new(),
    };
    let (client, server) = match open(config, tls).await {
        Ok(session) => session,
        Err(error) => {
            out.errors.push(CheckFailure {
                check: "connect",
                error,
            });
            return out;
        }
    };
    let prepared = crate::collect::prepared::Prepared::default();
    let ctx = PollContext {
        client: &client,
        prepared: &prepared,
        target: config,
        server: &server,
        database: datname,
        own_backends: vec![server.backend_pid],
        max_tables: None,
    };
    for check in CHECKS
        .iter()
        .filter(|c| server.version_num >= c.min_version)
    {
        match (check.findings)(&ctx).await {
            Ok(findings) => out.findings.extend(findings),
            Err(CollectError::NotApplicable(reason)) => out.not_applicable.push(CheckFailure {
                check: check.name,
                error: reason,
            }),
            Err(e) => out.errors.push(CheckFailure {
                check: check.name,
                error: e.to_string(),
            }),
        }
    }
    out.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// A session to `config`'s database with the daemon's timeouts, and what it is connected to
/// (the CLI's `advise`: not through the daemon's connect gate, see [`crate::privileges::connect`]).
async fn open(
    config: &TargetConfig,
    tls: &crate::tls::Connector,
) -> Result<(Client, ServerInfo), String> {
    let client = crate::privileges::connect(config, &config.connection, tls)
        .await
        .map_err(|e| e.to_string())?;
    let setup = format!(
        "SET statement_timeout = {}; SET lock_timeout = {}",
        config.statement_timeout.as_millis(),
        config.lock_timeout.as_millis()
    );
    let describe = |e: tokio_postgres::Error| describe_pg_error(&e);
    client.batch_execute(&setup).await.map_err(describe)?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), pg_backend_pid()",
            &[],
        )
        .await
        .map_err(describe)?;
    let server = ServerInfo {
        version_num: row.get(0),
        version: row.get(1),
        backend_pid: row.get(2),
    };
    Ok((client, server))
}
