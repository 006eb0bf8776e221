//! What every page shares: escaping, the layout (styles with a dark mode that follows the
//! browser), links between pages, and the alerts table.
//!
//! Everything that did not come from pgvigil's own source text goes through [`escape`]:
//! query texts, audit rows, error messages, label values and target names are all
//! attacker-controlled.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::alert::engine::{ActiveAlertView, AlertsView};

/// Escape text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a path segment keeps as is: letters, digits, `-`, `_` and `~` (RFC 3986's unreserved
/// characters but `.`, so a name like `..` cannot climb out of `/targets/`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// One path segment, percent-encoded.
pub(crate) fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A percent-encoded path segment decoded; `None` if it is not UTF-8 once decoded.
pub(crate) fn decode_segment(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// `<a href="/targets/NAME">NAME</a>`.
pub(crate) fn target_link(name: &str) -> String {
    format!(
        "<a href=\"/targets/{}\">{}</a>",
        encode_segment(name),
        escape(name)
    )
}

/// `<a href="/imports/ID"><code>ID</code></a>`.
pub(crate) fn import_link(id: &str) -> String {
    format!(
        "<a href=\"/imports/{}\"><code>{}</code></a>",
        encode_segment(id),
        escape(id)
    )
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fff;--muted:#6b6b70;--line:#d6d6da;--panel:#f6f6f8;\
--bad:#b3261e;--good:#1a7f37;--warn:#9a6700;--s0:#1f6feb;--s1:#d4651c;--s2:#1a7f37;--s3:#8250df;\
--s4:#b3261e;--s5:#0e7c86;--s6:#9a6700;--s7:#6b6b70}\
@media (prefers-color-scheme:dark){:root{--fg:#e6e6e9;--bg:#141416;--muted:#9a9aa2;--line:#3a3a40;\
--panel:#1d1d21;--bad:#ff7b72;--good:#56d364;--warn:#e3b341;--s0:#58a6ff;--s1:#f0883e;--s2:#56d364;\
--s3:#bc8cff;--s4:#ff7b72;--s5:#39c5cf;--s6:#e3b341;--s7:#9a9aa2}}\
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:var(--fg);background:var(--bg);line-height:1.4}\
a{color:var(--s0)}h1{margin:0 0 .3em}h1 small{font-weight:normal;color:var(--muted);font-size:55%}\
nav{margin-bottom:1em;color:var(--muted)}\
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid var(--line);padding:4px 8px;\
text-align:left;vertical-align:top}th{background:var(--panel)}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.up,.v-ok,.v-running,.v-failed{color:var(--good)}.down,.firing,.v-shortfall,.v-surplus,.v-mismatch,\
.v-stalled,.v-aborted,.v-invalid{color:var(--bad);font-weight:bold}.starting,.pending,.v-confirming,\
.v-unknown{color:var(--warn)}code,pre{font-size:90%}pre{background:var(--panel);padding:.6em;overflow-x:auto}\
.step{background:var(--panel);border-left:3px solid var(--bad);padding:.3em .6em;margin-top:.3em}\
.charts{display:flex;flex-wrap:wrap;gap:1em;margin-bottom:1.5em}\
figure{margin:0;padding:.5em;border:1px solid var(--line);background:var(--panel)}\
figcaption{font-weight:bold;margin-bottom:.2em}svg text{fill:var(--muted);font-size:10px}\
svg .grid{stroke:var(--line);stroke-width:1}svg .lim{stroke:var(--bad);stroke-dasharray:4 3;stroke-width:1.5}\
svg polyline{fill:none!important;stroke-width:1.8}\
.legend{list-style:none;padding:0;margin:.3em 0 0;font-size:85%;max-width:520px}.legend li{white-space:nowrap;\
overflow:hidden;text-overflow:ellipsis}.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}\
.c0{stroke:var(--s0);fill:var(--s0);background:var(--s0)}.c1{stroke:var(--s1);fill:var(--s1);background:var(--s1)}\
.c2{stroke:var(--s2);fill:var(--s2);background:var(--s2)}.c3{stroke:var(--s3);fill:var(--s3);background:var(--s3)}\
.c4{stroke:var(--s4);fill:var(--s4);background:var(--s4)}.c5{stroke:var(--s5);fill:var(--s5);background:var(--s5)}\
.c6{stroke:var(--s6);fill:var(--s6);background:var(--s6)}.c7{stroke:var(--s7);fill:var(--s7);background:var(--s7)}\
rect.v-ok,rect.v-running,rect.v-failed{fill:var(--good)}rect.v-shortfall,rect.v-surplus,rect.v-mismatch,\
rect.v-stalled,rect.v-aborted,rect.v-invalid{fill:var(--bad)}rect.v-confirming,rect.v-unknown{fill:var(--warn)}\
rect.v-none{fill:var(--line)}";

/// The start of a page: doctype, head (title, styles, a 15 s refresh) and the navigation.
pub(crate) fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"15\"><title>{} · pgvigil</title><style>{STYLE}</style></head>\
         <body><nav><a href=\"/\">pgvigil</a> · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/api/v1/targets\">/api/v1/targets</a> · <a href=\"/api/v1/alerts\">/api/v1/alerts</a> · \
         <a href=\"/api/v1/imports\">/api/v1/imports</a> · <a href=\"/api/v1/locks\">/api/v1/locks</a></nav>",
        escape(title)
    )
}

/// The end of a page.
pub(crate) const FOOT: &str = "</body></html>";

/// The Content-Security-Policy of every page: no script at all, styles inline only, nothing
/// loaded from elsewhere. Escaping keeps injected markup out; this keeps it inert if a bug
/// ever let some in.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Active alerts (firing first, with their runbook's first step), then recent resolutions;
/// only those `keep` accepts.
pub(crate) fn alerts_section(
    page: &mut String,
    view: &AlertsView,
    keep: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    page.push_str("<h2 id=\"alerts\">Alerts</h2>");
    if let Some(error) = &view.state_error {
        let _ = write!(page, "<p class=\"down\">{}</p>", escape(error));
    }
    let mut active: Vec<&ActiveAlertView> =
        view.active.iter().filter(|a| keep(&a.labels)).collect();
    if active.is_empty() {
        page.push_str("<p>None firing or pending.</p>");
    } else {
        page.push_str("<table><tr><th>state</th><th>alert</th><th>target</th><th>labels</th><th>since</th><th>what happened, and the first step</th></tr>");
        active.sort_by_key(|a| (a.state != "firing", a.labels.get("alertname").cloned()));
        for a in active {
            alert_row(page, a);
        }
        page.push_str("</table>");
    }
    let resolved: Vec<_> = view
        .resolved
        .iter()
        .filter(|r| keep(&r.labels))
        .take(20)
        .collect();
    if !resolved.is_empty() {
        page.push_str("<h3>Recently resolved</h3><table><tr><th>alert</th><th>labels</th><th>firing since</th><th>resolved</th><th>summary</th></tr>");
        for r in resolved {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(r.labels.get("alertname").map_or("", String::as_str)),
                labels_html(&r.labels),
                escape(r.firing_since.as_deref().unwrap_or("")),
                escape(&r.resolved_at),
                escape(r.annotations.get("summary").map_or("", String::as_str)),
            );
        }
        page.push_str("</table>");
    }
}

fn alert_row(page: &mut String, a: &ActiveAlertView) {
    let alertname = a.labels.get("alertname").map_or("", String::as_str);
    let target = a
        .labels
        .get("target")
        .map_or_else(String::new, |t| target_link(t));
    let mut details = annotations_html(&a.annotations);
    if let Some(id) = a.labels.get("import_id") {
        let _ = write!(details, "<br>import {}", import_link(id));
    }
    if a.state == "firing" {
        if let Some(step) = super::runbooks::first_step_html(alertname) {
            let _ = write!(
                details,
                "<div class=\"step\"><b>First step:</b> {step}</div>"
            );
        }
    }
    let _ = write!(
        page,
        "<tr><td class=\"{}\">{}</td><td>{}</td><td>{target}</td><td>{}</td><td>{}</td><td>{details}</td></tr>",
        a.state,
        a.state,
        escape(alertname),
        labels_html(&a.labels),
        escape(a.firing_since.as_deref().unwrap_or(&a.active_since)),
    );
}

fn labels_html(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "target"))
        .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn annotations_html(annotations: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    if let Some(summary) = annotations.get("summary") {
        let _ = write!(out, "<b>{}</b><br>", escape(summary));
    }
    if let Some(description) = annotations.get("description") {
        let _ = write!(out, "{}<br>", escape(description));
    }
    if let Some(url) = annotations.get("runbook_url") {
        // Only links that cannot run anything: a configured base URL or a relative path.
        let safe =
            url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/');
        if safe {
            let _ = write!(out, "<a href=\"{}\">runbook</a> ", escape(url));
        }
    }
    let rest: Vec<String> = annotations
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "summary" | "description" | "runbook_url"))
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    if !rest.is_empty() {
        // Folded (no script needed): the numbers are there for who wants them.
        let _ = write!(
            out,
            "<details><summary>every annotation</summary><small>{}</small></details>",
            rest.join(" · ")
        );
    }
    out
}

/// A number for a table cell: empty when unknown.
pub(crate) fn num(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_handles_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn segments_round_trip() {
        for name in ["main", "a b/c?d#e", "ünïcode", "<x>\"'"] {
            let encoded = encode_segment(name);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'%')
            );
            assert_eq!(decode_segment(&encoded).as_deref(), Some(name));
        }
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(decode_segment("%ff"), None);
    }

    #[test]
    fn annotations_link_only_to_http_runbooks() {
        let mut a = BTreeMap::new();
        a.insert("runbook_url".to_owned(), "javascript:alert(1)".to_owned());
        assert!(!annotations_html(&a).contains("href"));
        a.insert("runbook_url".to_owned(), "https://x/r.md".to_owned());
        assert!(annotations_html(&a).contains("href=\"https://x/r.md\""));
    }
}
