//! Property tests of query texts on their way into `pgvigil_statement_info` and the status
//! page: huge texts, control characters, quotes, backslashes, markup and any Unicode (a text
//! that was not UTF-8 on the server arrives lossily decoded, which these cover too) give a
//! bounded one-line label that the exposition escapes and an HTML-escaped cell.

use proptest::prelude::*;

use super::sql::{normalise_fetched_text, normalise_query_text};
use crate::metrics::{Metrics, STATEMENT_INFO, Snapshot};

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => proptest::collection::vec(
            prop_oneof![
                Just("<script>alert(1)</script>".to_owned()),
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("\n".to_owned()),
                Just("\r\n\t".to_owned()),
                Just("\u{0}".to_owned()),
                Just("\u{7f}\u{1b}[31m".to_owned()),
                Just("'; DROP TABLE t; --".to_owned()),
                Just("é漢字🙂".to_owned()),
                Just("\u{202e}".to_owned()),
                "[a-zA-Z0-9 ]{0,20}",
            ],
            0..60,
        )
        .prop_map(|parts| parts.concat()),
        // Huge: past any label length, with the cut landing anywhere.
        1 => (0usize..4, 1000usize..20_000).prop_map(|(i, n)| {
            ["x", "é", "\n", "<"][i].repeat(n)
        }),
        // Bytes that were not UTF-8, as the client would decode them.
        1 => proptest::collection::vec(any::<u8>(), 0..400)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Undo the exposition's label-value escaping (`\\`, `\"`, `\n`).
fn unescape_label(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `query` label of the one `pgvigil_statement_info` sample in `text`.
fn query_label(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pgvigil_statement_info{"))
        .collect();
    assert_eq!(lines.len(), 1, "one sample on one line: {text}");
    let line = lines[0];
    let start = line.find("query=\"").expect("a query label") + "query=\"".len();
    // The value ends at the first quote not escaped by a backslash.
    let bytes = line.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => break,
            _ => i += 1,
        }
    }
    unescape_label(&line[start..i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn labels_are_bounded_single_line_and_survive_the_exposition(
        text in hostile_text(),
        max in 16usize..300,
        cut in any::<bool>(),
    ) {
        let label = normalise_fetched_text(&text, cut, max);
        prop_assert!(label.chars().count() <= max + 1, "{} > {max} + 1", label.chars().count());
        prop_assert!(!label.contains(['\n', '\r', '\t']), "{label:?}");
        prop_assert!(!label.starts_with(' ') && !label.contains("  "), "{label:?}");
        if !cut && text.split_whitespace().map(|w| w.chars().count() + 1).sum::<usize>() <= max {
            prop_assert_eq!(&label, &normalise_query_text(&text, usize::MAX));
        }

        let metrics = Metrics::new();
        let mut snap = Snapshot::default();
        snap.push(&STATEMENT_INFO, vec!["42".into(), label.clone()], 1.0);
        metrics.store().publish("main", "statements", snap);
        let exposed = metrics.encode_classic();
        prop_assert_eq!(query_label(&exposed), label);
    }

    #[test]
    fn the_status_page_escapes_any_text(text in hostile_text()) {
        let html = crate::http::escape(&text);
        prop_assert!(!html.contains(['<', '>', '"', '\'']), "{html}");
        // Every & starts an entity pgvigil wrote.
        for (i, _) in html.match_indices('&') {
            let rest = &html[i..];
            prop_assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| rest.starts_with(e)),
                "{html}"
            );
        }
        let back = html
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        prop_assert_eq!(back, text);
    }
}
