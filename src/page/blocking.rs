//! The "Blocked sessions" section of a target's page: the locks collector's blocking chains
//! as a tree, the session at the head of each queue first, every waiter indented under the
//! session it waits for, with what it waits for and its statement (escaped).

use std::fmt::Write as _;

use super::html::escape;
use super::sections::TargetView;
use crate::alert::rules::human_seconds;
use crate::collect::locks::PreparedXact;
use crate::collect::locks::chains::{ChainNode, waits_for_strong_lock};

/// The section's body; `None` when the locks collector has not reported.
pub(crate) fn render(view: &TargetView<'_>) -> Option<String> {
    let locks = view.observations.locks.as_ref()?;
    if locks.chains.is_empty() {
        return Some(if locks.waiting_backends == 0 {
            "<p>No session waits for a lock.</p>".to_owned()
        } else {
            format!(
                "<p>{} session(s) wait for a lock; their blockers were gone when pgvigil looked.</p>",
                locks.waiting_backends
            )
        });
    }
    let mut out = String::new();
    let examined = locks.waiters.len() as i64;
    let _ = write!(
        out,
        "<p>{} session(s) wait for a lock{}.</p><ul class=\"tree\">",
        locks.waiting_backends,
        if locks.waiting_backends > examined {
            format!("; the {examined} longest waiters are shown")
        } else {
            String::new()
        }
    );
    for root in &locks.chains {
        node(root, locks.oldest_prepared(), &mut out);
    }
    out.push_str("</ul>");
    Some(out)
}

/// One session and, nested, the sessions waiting for it.
fn node(n: &ChainNode, prepared: Option<&PreparedXact>, out: &mut String) {
    let who = match (&n.session, n.pid) {
        (_, 0) => match prepared {
            Some(p) => format!(
                "prepared transaction '{}' (pid 0) · {} · {} · prepared {} ago · end it: {}",
                escape(&p.gid),
                escape(&p.database),
                escape(&p.owner),
                human_seconds(p.age_seconds.unwrap_or(0.0)),
                escape(&p.fix()),
            ),
            None => "a prepared transaction (pid 0; see pg_prepared_xacts)".to_owned(),
        },
        (Some(s), pid) => format!(
            "pid {pid} · {} · {} · {} · application \"{}\" · transaction open {}",
            escape(&s.datname),
            escape(&s.usename),
            escape(&s.state),
            escape(&s.application_name),
            human_seconds(s.xact_age_seconds.unwrap_or(0.0)),
        ),
        (None, pid) => format!("pid {pid} (session gone)"),
    };
    let _ = write!(out, "<li>{who}");
    if let Some(w) = &n.waiting {
        let class = if waits_for_strong_lock(w) {
            " class=\"down\""
        } else {
            ""
        };
        let _ = write!(
            out,
            " — <span{class}>waits {} for {} on {} {}</span>",
            w.wait_seconds.map_or_else(|| "?".to_owned(), human_seconds),
            escape(&w.mode),
            escape(&w.locktype),
            escape(w.relation.as_deref().unwrap_or("")),
        );
        if !n.also_blocked_by.is_empty() {
            let _ = write!(out, " (also behind pids {:?})", n.also_blocked_by);
        }
    }
    if n.in_cycle {
        out.push_str(" — <strong>deadlock cycle</strong>");
    }
    if n.behind > 0 {
        let _ = write!(out, " — <strong>{} behind it</strong>", n.behind);
    }
    if let Some(s) = n.session.as_ref().filter(|s| !s.query.is_empty()) {
        let _ = write!(out, "<br><code>{}</code>", escape(&s.query));
    }
    if !n.children.is_empty() {
        out.push_str("<ul>");
        for c in &n.children {
            node(c, prepared, out);
        }
        out.push_str("</ul>");
    }
    out.push_str("</li>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Observations;
    use crate::collect::locks::{Examined, LockSession, LockWaiter, LocksReport, summarise};

    #[test]
    fn the_tree_nests_waiters_under_their_blocker_and_escapes_queries() {
        let waiter = |pid, mode: &str, by: i32| LockWaiter {
            pid,
            datname: "shop".into(),
            locktype: "relation".into(),
            mode: mode.into(),
            relation: Some("contacts".into()),
            wait_seconds: Some(8.0),
            blocked_by: vec![by],
        };
        let idle = LockSession {
            pid: 10,
            datname: "shop".into(),
            state: "idle in transaction".into(),
            query: "SELECT '<script>' FROM contacts".into(),
            ..LockSession::default()
        };
        let (_, report) = summarise(
            vec![],
            Examined {
                waiters: vec![
                    waiter(20, "AccessExclusiveLock", 10),
                    waiter(30, "AccessShareLock", 20),
                ],
                sessions: vec![idle],
                ..Examined::default()
            },
            true,
        );
        let obs = Observations {
            locks: Some(LocksReport {
                waiting_backends: 2,
                ..report
            }),
            ..Observations::default()
        };
        let html = render(&TargetView { observations: &obs }).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let (p10, p20, p30) = (
            html.find("pid 10").unwrap(),
            html.find("pid 20").unwrap(),
            html.find("pid 30").unwrap(),
        );
        assert!(p10 < p20 && p20 < p30, "{html}");
        assert_eq!(
            html.matches("<ul").count(),
            3,
            "root list and two levels: {html}"
        );
        assert!(html.contains("2 behind it"), "{html}");
        assert!(
            html.contains("class=\"down\">waits 8s for AccessExclusiveLock"),
            "{html}"
        );
        // Nothing waits; no report.
        let quiet = Observations {
            locks: Some(LocksReport::default()),
            ..Observations::default()
        };
        let html = render(&TargetView {
            observations: &quiet,
        })
        .unwrap();
        assert!(html.contains("No session waits"), "{html}");
        assert!(
            render(&TargetView {
                observations: &Observations::default()
            })
            .is_none()
        );
    }
}
