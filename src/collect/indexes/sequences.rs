//! Sequences (and identity columns) running out: how much of its range each has used, its
//! range ending at the tighter of its own limit and its column type's, the sentence that says
//! so and the SQL that widens whichever ends first. Pure, like the rest of [`super::verdicts`],
//! which judges them against the thresholds.

use serde::Serialize;

use super::catalog::SequenceDef;
use super::verdicts::quote_ident;

/// How much of its range a sequence has used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceUse {
    /// The sequence.
    pub sequence: String,
    /// `schema.table.column` it feeds, '' if none.
    pub column: String,
    /// Share of the range used, 0 to 1.
    pub used_ratio: f64,
    /// Values (increments) left.
    pub remaining: f64,
    /// The last value it may hand out: the lower of its MAXVALUE and its column type's
    /// (the higher of the minimums for a descending one).
    pub limit: i64,
    /// Whether the column type, not the sequence, sets the limit.
    pub column_type_limits: bool,
    /// The column's type (`integer`, `bigint`, ...), '' if it feeds none.
    pub column_type: String,
    /// The sequence's own type.
    pub sequence_type: String,
}

/// The lowest and highest value of an integer column type; `None` for a type with no such
/// limit pgvigil knows (`numeric`, ...).
fn type_range(type_name: &str) -> Option<(i64, i64)> {
    match type_name {
        "smallint" => Some((i16::MIN.into(), i16::MAX.into())),
        "integer" => Some((i32::MIN.into(), i32::MAX.into())),
        "bigint" => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// How much of its range a sequence has used, its range ending at the tighter of its own
/// limit and its column type's.
pub fn sequence_use(seq: &SequenceDef) -> SequenceUse {
    let column_range = seq.column_type.as_deref().and_then(type_range);
    let ascending = seq.increment > 0;
    let (limit, column_type_limits) = match (ascending, column_range) {
        (true, Some((_, max))) if max < seq.max => (max, true),
        (false, Some((min, _))) if min > seq.min => (min, true),
        (true, _) => (seq.max, false),
        (false, _) => (seq.min, false),
    };
    let start = i128::from(seq.start);
    let limit_wide = i128::from(limit);
    // Never used: the first value is still to come.
    let last = seq
        .last_value
        .map_or(start - i128::from(seq.increment), i128::from);
    let (span, done) = if ascending {
        (limit_wide - start, last - start)
    } else {
        (start - limit_wide, start - last)
    };
    let used_ratio = if span <= 0 {
        if done >= 0 { 1.0 } else { 0.0 }
    } else {
        (done as f64 / span as f64).clamp(0.0, 1.0)
    };
    let step = i128::from(seq.increment.unsigned_abs().max(1));
    let left = if ascending {
        limit_wide - last
    } else {
        last - limit_wide
    };
    SequenceUse {
        sequence: seq.name.clone(),
        column: match (&seq.table, &seq.column) {
            (Some(t), Some(c)) => format!("{t}.{}", quote_ident(c)),
            _ => String::new(),
        },
        used_ratio,
        remaining: (left.max(0) / step) as f64,
        limit,
        column_type_limits,
        column_type: seq.column_type.clone().unwrap_or_default(),
        sequence_type: seq.sequence_type.clone(),
    }
}

pub(super) fn describe_sequence(seq: &SequenceDef, usage: &SequenceUse) -> (String, String) {
    let percent = 100.0 * usage.used_ratio;
    let last = seq
        .last_value
        .map_or_else(|| "none yet".to_owned(), |v| v.to_string());
    let cycle = if seq.cycle {
        " (CYCLE: it will wrap around and hand out values already used)"
    } else {
        ""
    };
    let feeds = if usage.column.is_empty() {
        String::new()
    } else {
        format!(
            " feeding {} ({})",
            usage.column,
            seq.column_type.as_deref().unwrap_or("?")
        )
    };
    let why = if usage.column_type_limits {
        format!(
            "the column's type ends at {} although the sequence ({}) goes on to {}",
            usage.limit, seq.sequence_type, seq.max
        )
    } else {
        format!("the sequence ends at {}", usage.limit)
    };
    let message = format!(
        "sequence {}{feeds} has used {percent:.1}% of its range: last value {last}, {} values left; {why}{cycle}",
        seq.name, usage.remaining
    );
    let fix = sequence_fix(seq, usage);
    (message, fix)
}

/// The SQL that gives a sequence (and the column it feeds) room again: widen whichever ends
/// first. A column narrower than bigint is rewritten (ACCESS EXCLUSIVE for as long as the
/// rewrite takes), so the fix says how to do it on a big table; an identity column's sequence
/// follows its column's type, a serial's or a default's needs its own `ALTER SEQUENCE`; a
/// sequence alone narrower than bigint changes without a rewrite.
fn sequence_fix(seq: &SequenceDef, usage: &SequenceUse) -> String {
    let narrow_sequence = seq.sequence_type != "bigint";
    let seq_alter = if seq.increment > 0 && seq.max < i64::from(i32::MAX) && narrow_sequence {
        // A MAXVALUE of its own below the type's: AS bigint keeps it.
        format!(
            "ALTER SEQUENCE {} AS bigint MAXVALUE 9223372036854775807;",
            seq.name
        )
    } else {
        format!("ALTER SEQUENCE {} AS bigint;", seq.name)
    };
    let narrow_column = !matches!(usage.column_type.as_str(), "bigint" | "numeric" | "");
    match (&seq.table, &seq.column) {
        (Some(table), Some(column)) if narrow_column => format!(
            "ALTER TABLE {table} ALTER COLUMN {col} TYPE bigint;{then}  -- rewrites {table} (and its indexes) under ACCESS EXCLUSIVE: on a large table add a bigint column, fill it in batches, and swap it in (with its index built CONCURRENTLY) in one short transaction instead",
            col = quote_ident(column),
            then = if narrow_sequence && seq.identity.is_none() {
                format!(" {seq_alter}")
            } else {
                String::new()
            }
        ),
        _ if narrow_sequence => format!(
            "{seq_alter}  -- no table rewrite{}",
            if usage.column.is_empty() {
                ""
            } else {
                "; the column is already wide enough"
            }
        ),
        _ if seq.max < i64::MAX && seq.increment > 0 => {
            format!("ALTER SEQUENCE {} MAXVALUE 9223372036854775807;", seq.name)
        }
        _ => format!(
            "-- {} is bigint at its limit: plan a new key (a second sequence range, or uuid)",
            seq.name
        ),
    }
}
