//! Missing-index advice and the rulebook lints over the top statements (collector `advice`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    ADVICE_METRICS;

    INDEX_SUGGESTION_INFO, Gauge, "pgvigil_index_suggestion_info", ["target", "datname", "table", "columns", "queryid"],
        "1 for each index the advice suggests: a top statement (queryid, the one with the most time) filters, joins or sorts the table by columns no valid index starts with, and the table is large and sequentially scanned; capped by max_suggestions.";
    INDEX_SUGGESTION_SEQ_SCANS, Gauge, "pgvigil_index_suggestion_seq_scans", ["target", "datname", "table", "columns"],
        "Sequential scans of a suggested index's table between the last two advice runs (since the statistics were reset on the first run).";
    INDEX_SUGGESTIONS_DROPPED, Gauge, "pgvigil_index_suggestions_dropped", ["target", "datname"],
        "Index suggestions found but not exported because of max_suggestions (the weakest ones).";
    STATEMENT_LINT_INFO, Gauge, "pgvigil_statement_lint_info", ["target", "datname", "queryid", "lint"],
        "1 for each rulebook lint of a top statement: select_star (SELECT * or t.*) or unbounded_select (no LIMIT, not aggregate-only, reads a large table, returns many rows a call); capped by max_lints.";
    STATEMENT_LINTS_DROPPED, Gauge, "pgvigil_statement_lints_dropped", ["target", "datname"],
        "Statement lints found but not exported because of max_lints.";
    ADVICE_STATEMENTS, Gauge, "pgvigil_advice_statements", ["target", "datname", "outcome"],
        "Top statements the last advice run read, by outcome: parsed, or unparsed (a text cut by query_text_length, or syntax the parser does not know).";
}
