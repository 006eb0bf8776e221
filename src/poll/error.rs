//! Why a poll loop lost its session: the typed errors of the poll layer. Their text is what
//! the status page and `/api/v1/targets` show as `last_error` and what the log says.

use std::time::Duration;

/// Why a source could not be connected to, or why its session was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PollError {
    /// The connection could not be opened: the server's or the network's error, with the fix
    /// for the usual mistakes (TLS, credentials, pointing at the wrong port).
    #[error("{0}")]
    Connect(String),
    /// The connection opened, but setting the session up failed (the session settings, or
    /// proving what the server is).
    #[error("{0}")]
    Session(String),
    /// The whole connection attempt, handshake included, overran its limit.
    #[error(
        "no session within connect_timeout ({}): the address did not complete the connection, the TLS and PostgreSQL startup, and the session setup in time; check that host and port name a running PostgreSQL (or PgBouncer) that is not overloaded, or raise connect_timeout",
        humantime::format_duration(*limit)
    )]
    ConnectTimeout {
        /// `connect_timeout`.
        limit: Duration,
    },
    /// A collector got no answer in time; the session is in an unknown state.
    #[error("collector {collector} timed out; reconnecting")]
    CollectorTimeout {
        /// The collector's name.
        collector: &'static str,
    },
    /// A collector failed and the session could not be brought back out of what it left
    /// (a transaction that would not roll back, a session that does not answer).
    #[error(
        "collector {collector} failed and its session could not be reset ({error}); reconnecting"
    )]
    Unsettled {
        /// The collector that failed.
        collector: &'static str,
        /// Why the reset failed.
        error: String,
    },
    /// Every collector that ran in the poll failed: the session answers nothing useful, so
    /// the source is not up. The first failure, prefixed with its collector.
    #[error("every collector failed; first: {0}")]
    NothingWorks(String),
    /// The connection closed under a running poll.
    #[error("the connection was lost during the poll")]
    ConnectionLost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_operators_see() {
        assert_eq!(
            PollError::ConnectTimeout {
                limit: Duration::from_secs(10)
            }
            .to_string()
            .split(':')
            .next(),
            Some("no session within connect_timeout (10s)")
        );
        assert_eq!(
            PollError::CollectorTimeout {
                collector: "tables"
            }
            .to_string(),
            "collector tables timed out; reconnecting"
        );
    }
}
