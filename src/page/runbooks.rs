//! The runbooks' first steps, shown inline beside each firing alert on the status page.
//!
//! Every runbook (`docs/runbooks/<AlertName>.md`, sections Meaning / Confirm / Act) is embedded
//! at build time. The first step is the first item of its `## Act` section (a list item, or
//! the first sentence of a paragraph). Tests check that every rule in
//! [`crate::alert::rules::RULES`] has one, that every runbook is of a rule, and that every
//! runbook file is listed here.

use std::fmt::Write as _;

use super::html::escape;

/// `(name, text)` of each runbook named: `docs/runbooks/<name>.md`, embedded, so the name and
/// the file cannot disagree.
macro_rules! runbooks {
    ($($name:ident,)*) => {
        &[$((
            stringify!($name),
            include_str!(concat!("../../docs/runbooks/", stringify!($name), ".md")),
        )),*]
    };
}

// One name per file of docs/runbooks/, one per rule of RULES (tests fail when one is missing).
const RUNBOOKS: &[(&str, &str)] = runbooks![
    ArchiveFailing,
    ChecksumFailures,
    ConnectionsNearLimit,
    DatabaseGrowth,
    DeadlocksDetected,
    IdleInTransaction,
    ImportReportedMismatch,
    ImportRolledBack,
    ImportRowShortfall,
    ImportStalled,
    IndexSuggested,
    InvalidIndex,
    LockQueue,
    LockWaitsLong,
    LongRunningTransaction,
    MigrationFailed,
    PgvigilTargetDown,
    PoolClientConnectionsNearLimit,
    PoolClientsWaiting,
    PoolMaxWaitHigh,
    PoolSaturated,
    PostgresRestarted,
    RecoveryRoleChanged,
    ReplicationLagHigh,
    ReplicationSlotInactive,
    ReplicationSlotWalRetentionHigh,
    RolledBackInserts,
    SequenceExhaustion,
    SettingsPendingRestart,
    SlowQuery,
    StandbyNotStreaming,
    TableRowsDropped,
    WraparoundRisk,
];

/// The runbook of `alertname`, as Markdown.
pub(crate) fn runbook(alertname: &str) -> Option<&'static str> {
    RUNBOOKS
        .iter()
        .find(|(name, _)| *name == alertname)
        .map(|(_, text)| *text)
}

/// The first step of `alertname`'s runbook, as HTML (escaped, with its code spans).
pub(crate) fn first_step_html(alertname: &str) -> Option<String> {
    first_step(runbook(alertname)?).map(|s| inline_markdown(&s))
}

/// The first step of the `## Act` section of `markdown`, as one line of Markdown.
fn first_step(markdown: &str) -> Option<String> {
    let act = markdown
        .split("\n## ")
        .find(|section| section.starts_with("Act"))?;
    let mut lines = act.lines().skip(1).skip_while(|l| l.trim().is_empty());
    let first = lines.next()?;
    let trimmed = first.trim_start();
    let item = list_marker(trimmed);
    let mut text = match item {
        Some(marker) => trimmed[marker..].trim().to_owned(),
        None => trimmed.trim().to_owned(),
    };
    for line in lines {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || list_marker(t).is_some() || t.starts_with("```") {
            break;
        }
        text.push(' ');
        text.push_str(t);
    }
    if item.is_none() {
        // A paragraph: its first sentence.
        if let Some(end) = text.find(". ") {
            text.truncate(end + 1);
        }
    }
    (!text.is_empty()).then_some(text)
}

/// The length of a list marker (`- `, `* `, `1. `) at the start of `line`.
fn list_marker(line: &str) -> Option<usize> {
    if line.starts_with("- ") || line.starts_with("* ") {
        return Some(2);
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && line[digits..].starts_with(". ")).then_some(digits + 2)
}

/// Markdown's inline code, bold and links as HTML; everything else escaped.
fn inline_markdown(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['`', '*', '[']) {
        out.push_str(&escape(&rest[..i]));
        rest = &rest[i..];
        if let Some(code) = rest.strip_prefix('`') {
            if let Some(end) = code.find('`') {
                let _ = write!(out, "<code>{}</code>", escape(&code[..end]));
                rest = &code[end + 1..];
                continue;
            }
        } else if let Some(bold) = rest.strip_prefix("**") {
            if let Some(end) = bold.find("**") {
                let _ = write!(out, "<b>{}</b>", inline_markdown(&bold[..end]));
                rest = &bold[end + 2..];
                continue;
            }
        } else if let Some(link) = rest.strip_prefix('[') {
            if let Some((label, after)) = link.split_once("](") {
                if let Some(end) = after.find(')') {
                    out.push_str(&inline_markdown(label));
                    rest = &after[end + 1..];
                    continue;
                }
            }
        }
        out.push_str(&escape(&rest[..1]));
        rest = &rest[1..];
    }
    out.push_str(&escape(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_first_step() {
        for spec in crate::alert::rules::RULES {
            let step = runbook(spec.alertname)
                .and_then(first_step)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no first step in its runbook's Act section",
                        spec.alertname
                    )
                });
            assert!(step.len() > 20, "{}: {step}", spec.alertname);
        }
    }

    #[test]
    fn every_runbook_is_of_a_rule() {
        for (name, _) in RUNBOOKS {
            assert!(
                crate::alert::rules::find(name).is_some(),
                "docs/runbooks/{name}.md: no rule of that alertname in RULES"
            );
        }
    }

    #[test]
    fn every_runbook_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(
                runbook(&name).is_some(),
                "{}: add it to RUNBOOKS in src/page/runbooks.rs",
                path.display()
            );
        }
    }

    #[test]
    fn first_steps_of_lists_and_paragraphs() {
        let list = "# X\n\n## Act\n\n1. Find the owner\n   from `pid`.\n2. Then this.\n";
        assert_eq!(first_step(list).unwrap(), "Find the owner from `pid`.");
        let para = "## Meaning\nm\n## Act\nRe-run the import. Then fix it.\n\n## From\n";
        assert_eq!(first_step(para).unwrap(), "Re-run the import.");
        assert_eq!(first_step("## Meaning\nno act"), None);
    }

    #[test]
    fn inline_markdown_escapes_and_keeps_code() {
        assert_eq!(
            inline_markdown("run `a<b` **now**, see [X](X.md) <i>"),
            "run <code>a&lt;b</code> <b>now</b>, see X &lt;i&gt;"
        );
        assert_eq!(inline_markdown("a * b [c"), "a * b [c");
    }
}
