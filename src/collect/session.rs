//! Keeping a PostgreSQL session usable after a collector failed on it.
//!
//! A collector that fails inside an explicit transaction (its own `BEGIN`, an error before its
//! `COMMIT`) can leave the session `idle in transaction` or `idle in transaction (aborted)`.
//! In the aborted state every later query of every collector fails with 25P02
//! (`current transaction is aborted`), so one collector's failure would blind them all while
//! the session itself looks fine. After any failure the poll loop therefore calls [`settle`],
//! which finds out in one round trip whether the session is inside a transaction block, and
//! ends it if so.
//!
//! How: one simple-protocol query, `SELECT statement_timestamp() = transaction_timestamp()`.
//! Outside a transaction block the statement is its own transaction and the two timestamps
//! are equal; inside a block the transaction began with an earlier statement, so they differ;
//! in an aborted block the query fails with 25P02. (A bare `ROLLBACK` would be simpler, but
//! outside a transaction it makes the server log a WARNING, once per failing poll.) Cost: one
//! round trip per failed collector, plus a `ROLLBACK` when one was needed; no locks.
//!
//! A session can also be lost under pgvigil (`pg_terminate_backend`, a server restart, an
//! idle timeout of the server's): [`loss_reason`] names why, for the log's warning and
//! `pgvigil_session_losses_total`.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::describe_pg_error;

/// What [`settle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The session was outside any transaction block: nothing to do.
    Clean,
    /// It was inside an open transaction block, which was rolled back.
    EndedOpenTransaction,
    /// It was inside an aborted transaction block, which was rolled back.
    EndedAbortedTransaction,
}

impl Settled {
    /// For the log: what was wrong, or `None` when nothing was.
    pub fn describe(self) -> Option<&'static str> {
        match self {
            Settled::Clean => None,
            Settled::EndedOpenTransaction => {
                Some("the failed collector left its transaction open; it was rolled back")
            }
            Settled::EndedAbortedTransaction => Some(
                "the failed collector left the session in an aborted transaction; it was rolled back",
            ),
        }
    }
}

/// Make sure `client` is outside any transaction block, ending one that a failure left
/// behind. An error means the session cannot be trusted any more and should be dropped.
pub async fn settle(client: &Client) -> Result<Settled, String> {
    let probe = client
        .simple_query("SELECT statement_timestamp() = transaction_timestamp()")
        .await;
    let settled = match probe {
        Ok(messages) => {
            let same = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
                _ => None,
            });
            match same {
                Some(true) => return Ok(Settled::Clean),
                Some(false) => Settled::EndedOpenTransaction,
                None => return Err("the session check returned no row".to_owned()),
            }
        }
        Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
            Settled::EndedAbortedTransaction
        }
        Err(e) => return Err(describe_pg_error(&e)),
    };
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(|e| format!("ending the transaction failed: {}", describe_pg_error(&e)))?;
    Ok(settled)
}

/// Every `reason` of `pgvigil_session_losses_total`.
pub const LOSS_REASONS: [&str; 5] = [
    "terminated",
    "server_crash",
    "idle_timeout",
    "server_error",
    "closed",
];

/// Why a session was lost, from the SQLSTATE of the error that ended it (`None`: the
/// connection broke without a server error, or ended without one).
pub fn loss_reason(code: Option<&SqlState>) -> &'static str {
    match code {
        // pg_terminate_backend, or a smart/fast shutdown of the server.
        Some(c) if *c == SqlState::ADMIN_SHUTDOWN => "terminated",
        Some(c) if *c == SqlState::CRASH_SHUTDOWN => "server_crash",
        Some(c) if *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT || c.code() == "57P05" => {
            "idle_timeout"
        }
        Some(_) => "server_error",
        None => "closed",
    }
}

/// Whether an error means the session is gone (the server shut down or crashed, the backend
/// was terminated, the connection broke) rather than that one query failed: what was being
/// read is then unknown, not empty.
pub fn is_session_lost(e: &tokio_postgres::Error) -> bool {
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    e.is_closed() || io || ends_session(e.code())
}

/// Whether a server error with this SQLSTATE ends the session: connection exceptions (class
/// 08), and the shutdowns and terminations of class 57 (`57P01`–`57P03`); not a cancelled
/// statement (`57014`, a statement timeout), which leaves the session usable.
pub fn ends_session(code: Option<&SqlState>) -> bool {
    code.is_some_and(|c| {
        let c = c.code();
        c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdowns_and_broken_connections_end_the_session_a_timeout_does_not() {
        for code in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
        ] {
            assert!(ends_session(Some(&code)), "{code:?}");
        }
        for code in [
            SqlState::QUERY_CANCELED,
            SqlState::UNDEFINED_TABLE,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ] {
            assert!(!ends_session(Some(&code)), "{code:?}");
        }
        assert!(!ends_session(None));
    }

    #[test]
    fn losses_are_named_by_their_sqlstate() {
        assert_eq!(loss_reason(Some(&SqlState::ADMIN_SHUTDOWN)), "terminated");
        assert_eq!(loss_reason(Some(&SqlState::CRASH_SHUTDOWN)), "server_crash");
        assert_eq!(
            loss_reason(Some(&SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT)),
            "idle_timeout"
        );
        assert_eq!(
            loss_reason(Some(&SqlState::from_code("57P05"))),
            "idle_timeout"
        );
        assert_eq!(
            loss_reason(Some(&SqlState::PROTOCOL_VIOLATION)),
            "server_error"
        );
        assert_eq!(loss_reason(None), "closed");
        for reason in [
            loss_reason(Some(&SqlState::ADMIN_SHUTDOWN)),
            loss_reason(Some(&SqlState::CRASH_SHUTDOWN)),
            loss_reason(Some(&SqlState::from_code("57P05"))),
            loss_reason(Some(&SqlState::PROTOCOL_VIOLATION)),
            loss_reason(None),
        ] {
            assert!(LOSS_REASONS.contains(&reason), "{reason}");
        }
    }

    #[test]
    fn only_an_ended_transaction_is_worth_a_log_line() {
        assert_eq!(Settled::Clean.describe(), None);
        assert!(
            Settled::EndedAbortedTransaction
                .describe()
                .unwrap()
                .contains("aborted")
        );
        assert!(
            Settled::EndedOpenTransaction
                .describe()
                .unwrap()
                .contains("open")
        );
    }
}
