//! The process-wide limit on connection attempts in progress (`[server]
//! max_concurrent_connects`), so that a daemon starting (or a fleet reconnecting) does not open
//! hundreds of sessions at once on servers that cannot finish them within `connect_timeout`.
//!
//! Every connection attempt pgvigil makes while it runs — a source's main session (PostgreSQL
//! targets and PgBouncer admin consoles, [`crate::poll`]) and a target's database sessions
//! ([`crate::databases`]) — goes through [`ConnectGate::acquire`]. Step by step:
//!
//! 1. The attempt joins the line (`pgvigil_connect_attempts_waiting` + 1). The line is FIFO
//!    (tokio's semaphore is fair), so an attempt waits only for those ahead of it: each of
//!    them holds its permit at most `connect_timeout`, and an attempt that fails goes to the
//!    back of the line after its backoff. No source waits forever, however many others fail:
//!    with `n` attempts ahead and `p` permits it waits at most about `n / p × connect_timeout`.
//! 2. It gets a permit: the wait is observed in `pgvigil_connect_permit_wait_seconds`, and
//!    only now does the caller start the attempt's `connect_timeout` clock (the timeout still
//!    bounds the whole attempt: TCP, TLS, startup, authentication, session setup).
//! 3. The permit is returned as soon as the attempt is over, connected or not: an open session
//!    holds no permit (`pgvigil_connect_attempts_in_progress` counts those that do).
//!
//! Waiting in line is not being down: a source that waits keeps the state it had — `starting`
//! (no `pgvigil_up` series yet) before its first attempt, or down (`pgvigil_up 0`, from the
//! failure that needed the reconnect) — and nothing new is recorded for it until its attempt
//! finishes. Its data is as stale as that state says (a down source has published nothing since
//! it went down); `pgvigil_connect_attempts_waiting` above zero for long says the limit, not
//! the servers, is what keeps sources from coming up: raise `max_concurrent_connects`.
//!
//! A waiter that is cancelled (shutdown, a source removed) leaves the line without taking a
//! permit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// The line of connection attempts and the permits they wait for.
#[derive(Debug)]
pub(crate) struct ConnectGate {
    semaphore: Arc<Semaphore>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The configured number of permits, and how many of those out are retired when they come
    /// back (the limit was lowered while they were held).
    count: Mutex<Count>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Count {
    permits: usize,
    debt: usize,
}

impl Shared {
    fn count(&self) -> MutexGuard<'_, Count> {
        self.count.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Leave to run one connection attempt; returned when dropped.
#[derive(Debug)]
pub(crate) struct ConnectPermit {
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    /// How long the attempt waited in line for this permit.
    waited: Duration,
}

impl ConnectPermit {
    /// How long the attempt waited in line before it got this permit (and its
    /// `connect_timeout` clock started): named in a timeout's message when it was long.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for ConnectPermit {
    fn drop(&mut self) {
        self.shared.metrics.connect_in_progress(-1);
        let mut count = self.shared.count();
        if let Some(permit) = self.permit.take() {
            if count.debt > 0 {
                count.debt -= 1;
                permit.forget();
            }
            // Otherwise dropping it (under the lock, so a resize sees it back) frees it.
        }
    }
}

/// Counts a waiter out of the line however its wait ends (a permit, or cancellation).
struct Waiting<'m>(&'m Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.connect_waiting(-1);
    }
}

impl ConnectGate {
    /// A gate with `permits` (at least one) attempts in progress at once.
    pub(crate) fn new(permits: usize, metrics: Arc<Metrics>) -> Self {
        let permits = permits.max(1);
        ConnectGate {
            semaphore: Arc::new(Semaphore::new(permits)),
            shared: Arc::new(Shared {
                count: Mutex::new(Count { permits, debt: 0 }),
                metrics,
            }),
        }
    }

    /// Wait in line for a permit (FIFO). Start the attempt's `connect_timeout` after this.
    pub(crate) async fn acquire(&self) -> ConnectPermit {
        let metrics = &self.shared.metrics;
        let asked = Instant::now();
        metrics.connect_waiting(1);
        let waiting = Waiting(metrics);
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the connect semaphore is never closed");
        drop(waiting);
        metrics.connect_in_progress(1);
        let waited = asked.elapsed();
        metrics.connect_waited(waited.as_secs_f64());
        ConnectPermit {
            permit: Some(permit),
            shared: self.shared.clone(),
            waited,
        }
    }

    /// Take a new `max_concurrent_connects` (a reload). More permits are usable at once; fewer
    /// take effect as attempts in progress return theirs (none is interrupted).
    pub(crate) fn resize(&self, permits: usize) {
        let permits = permits.max(1);
        let mut count = self.shared.count();
        if permits > count.permits {
            let mut more = permits - count.permits;
            let cancelled = more.min(count.debt);
            count.debt -= cancelled;
            more -= cancelled;
            self.semaphore.add_permits(more);
        } else {
            let surplus = count.permits - permits;
            let forgotten = self.semaphore.forget_permits(surplus);
            count.debt += surplus - forgotten;
        }
        count.permits = permits;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn gauge(metrics: &Metrics, name: &str) -> String {
        let text = metrics.encode_classic();
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_owned()
    }

    /// Poll `future` once: `Some` if it finished.
    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_third_attempt_waits_in_line_until_a_permit_comes_back() {
        let metrics = Arc::new(Metrics::new());
        let gate = ConnectGate::new(2, metrics.clone());
        let a = gate.acquire().await;
        let _b = gate.acquire().await;
        assert_eq!(
            gauge(&metrics, "pgvigil_connect_attempts_in_progress"),
            "pgvigil_connect_attempts_in_progress 2"
        );
        let mut third = pin!(gate.acquire());
        assert!(poll_once(third.as_mut()).is_none(), "no permit left");
        assert_eq!(
            gauge(&metrics, "pgvigil_connect_attempts_waiting"),
            "pgvigil_connect_attempts_waiting 1"
        );
        drop(a);
        let _c = poll_once(third.as_mut()).expect("the returned permit goes to the waiter");
        assert_eq!(
            gauge(&metrics, "pgvigil_connect_attempts_waiting"),
            "pgvigil_connect_attempts_waiting 0"
        );
        assert_eq!(
            gauge(&metrics, "pgvigil_connect_attempts_in_progress"),
            "pgvigil_connect_attempts_in_progress 2"
        );
        assert_eq!(
            gauge(&metrics, "pgvigil_connect_permit_wait_seconds_count"),
            "pgvigil_connect_permit_wait_seconds_count 3"
        );
    }

    #[tokio::test]
    async fn the_line_is_first_come_first_served() {
        let gate = ConnectGate::new(1, Arc::new(Metrics::new()));
        let held = gate.acquire().await;
        let mut first = pin!(gate.acquire());
        let mut second = pin!(gate.acquire());
        assert!(poll_once(first.as_mut()).is_none());
        assert!(poll_once(second.as_mut()).is_none());
        drop(held);
        // The permit is the first waiter's, even when the second one asks first.
        assert!(poll_once(second.as_mut()).is_none());
        let p = poll_once(first.as_mut()).expect("first in line");
        drop(p);
        assert!(poll_once(second.as_mut()).is_some());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_line() {
        let metrics = Arc::new(Metrics::new());
        let gate = ConnectGate::new(1, metrics.clone());
        let _held = gate.acquire().await;
        {
            let mut waiter = pin!(gate.acquire());
            assert!(poll_once(waiter.as_mut()).is_none());
            assert_eq!(
                gauge(&metrics, "pgvigil_connect_attempts_waiting"),
                "pgvigil_connect_attempts_waiting 1"
            );
        }
        assert_eq!(
            gauge(&metrics, "pgvigil_connect_attempts_waiting"),
            "pgvigil_connect_attempts_waiting 0"
        );
    }

    #[tokio::test]
    async fn resizing_adds_permits_at_once_and_retires_held_ones_as_they_return() {
        let gate = ConnectGate::new(1, Arc::new(Metrics::new()));
        let a = gate.acquire().await;
        gate.resize(3);
        let b = gate.acquire().await;
        let c = gate.acquire().await;
        // Down to one while three are held: none is interrupted, and the next waits for two
        // to come back (one retired, then one for it).
        gate.resize(1);
        let mut next = pin!(gate.acquire());
        assert!(poll_once(next.as_mut()).is_none());
        drop(a);
        drop(b);
        assert!(
            poll_once(next.as_mut()).is_none(),
            "only one may be in progress"
        );
        drop(c);
        assert!(poll_once(next.as_mut()).is_some());
    }

    #[tokio::test]
    async fn raising_the_limit_again_cancels_what_was_still_to_retire() {
        let gate = ConnectGate::new(3, Arc::new(Metrics::new()));
        let a = gate.acquire().await;
        let b = gate.acquire().await;
        let _c = gate.acquire().await;
        gate.resize(1);
        gate.resize(2);
        // One of the three held is retired on return, the next one is free again.
        drop(a);
        let mut next = pin!(gate.acquire());
        assert!(poll_once(next.as_mut()).is_none(), "two still in progress");
        drop(b);
        let _d = poll_once(next.as_mut()).expect("back to two in progress");
        let mut last = pin!(gate.acquire());
        assert!(poll_once(last.as_mut()).is_none(), "never more than two");
    }
}
