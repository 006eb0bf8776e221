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
    #[error("{}", connect_timeout_message(*limit, *waited))]
    ConnectTimeout {
        /// `connect_timeout`.
        limit: Duration,
        /// How long the attempt waited in line for a connect permit (`[server]
        /// max_concurrent_connects`) before its `connect_timeout` clock started.
        waited: Duration,
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

/// A wait in line for a connect permit this long is named in a connect timeout's message:
/// the operator then sees that the attempt also queued behind others, so raising
/// `connect_timeout` alone is not the whole answer.
const LONG_PERMIT_WAIT: Duration = Duration::from_secs(1);

fn connect_timeout_message(limit: Duration, waited: Duration) -> String {
    let mut message = format!(
        "no session within connect_timeout ({}): the address did not complete the connection, the TLS and PostgreSQL startup, and the session setup in time; check that host and port name a running PostgreSQL (or PgBouncer) that is not overloaded, or raise connect_timeout",
        humantime::format_duration(limit)
    );
    if waited >= LONG_PERMIT_WAIT {
        // Whole milliseconds: humantime would print the nanoseconds of a measured wait.
        let waited = Duration::from_millis(waited.as_millis() as u64);
        message.push_str(&format!(
            "; before its connect_timeout started, the attempt waited {} in line for a connect permit ([server] max_concurrent_connects): if many sources connect at once, raise max_concurrent_connects too",
            humantime::format_duration(waited)
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_operators_see() {
        assert_eq!(
            PollError::ConnectTimeout {
                limit: Duration::from_secs(10),
                waited: Duration::from_millis(3),
            }
            .to_string()
            .split(':')
            .next(),
            Some("no session within connect_timeout (10s)")
        );
        let short = PollError::ConnectTimeout {
            limit: Duration::from_secs(10),
            waited: Duration::from_millis(300),
        }
        .to_string();
        assert!(short.ends_with("or raise connect_timeout"), "{short}");
        assert!(!short.contains("max_concurrent_connects"), "{short}");
        let long = PollError::ConnectTimeout {
            limit: Duration::from_secs(10),
            waited: Duration::from_micros(12_345_678),
        }
        .to_string();
        assert!(long.contains("raise connect_timeout"), "{long}");
        assert!(
            long.contains(
                "waited 12s 345ms in line for a connect permit ([server] max_concurrent_connects)"
            ),
            "{long}"
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
