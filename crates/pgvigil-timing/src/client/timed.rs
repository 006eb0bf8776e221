//! [`TimedClient`] and [`TimedTransaction`].

use std::fmt;

use tokio_postgres::{Client, Error, Transaction};

use super::__private::Ctx;
#[cfg(feature = "deadpool")]
use super::TimedStatement;
use super::{GenericTimedClient, ops, sealed};
use crate::recorder::Recorder;

/// A [`tokio_postgres::Client`] whose operations are timed. Build with [`Recorder::wrap`] or
/// [`TimedClient::new`].
///
/// It deliberately does not `Deref` to the client (that would silently skip timing): use
/// [`get_ref`](Self::get_ref) / [`into_inner`](Self::into_inner) for what the wrapper lacks.
pub struct TimedClient {
    inner: Client,
    recorder: Recorder,
}

impl fmt::Debug for TimedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedClient")
            .field("recorder", &self.recorder)
            .field("closed", &self.inner.is_closed())
            .finish()
    }
}

impl TimedClient {
    /// Wrap `client`, recording to `recorder`.
    pub fn new(client: Client, recorder: Recorder) -> Self {
        Self {
            inner: client,
            recorder,
        }
    }

    /// The wrapped client (operations on it are not timed).
    pub fn get_ref(&self) -> &Client {
        &self.inner
    }

    /// The wrapped client, mutably (operations on it are not timed).
    pub fn get_mut(&mut self) -> &mut Client {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> Client {
        self.inner
    }
}

impl sealed::Sealed for TimedClient {}
impl GenericTimedClient for TimedClient {
    fn __ctx(&self) -> Ctx<'_> {
        Ctx {
            client: &self.inner,
            recorder: &self.recorder,
        }
    }

    async fn transaction(&mut self) -> Result<TimedTransaction<'_>, Error> {
        let recorder = self.recorder.clone();
        let tx = ops::control(&recorder, "BEGIN", self.inner.transaction()).await?;
        Ok(TimedTransaction::new(tx, recorder))
    }
}

/// A [`tokio_postgres::Transaction`] whose operations are timed, including `COMMIT`/`ROLLBACK`.
/// Dropping it rolls back, as tokio-postgres does.
pub struct TimedTransaction<'a> {
    inner: Transaction<'a>,
    recorder: Recorder,
    pub(crate) statement_cache: CacheRef,
}

/// The pooled connection's statement cache, carried into its transactions.
#[cfg(feature = "deadpool")]
pub(crate) type CacheRef = Option<std::sync::Arc<deadpool_postgres::StatementCache>>;
#[cfg(not(feature = "deadpool"))]
pub(crate) type CacheRef = Option<std::sync::Arc<()>>;

impl fmt::Debug for TimedTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedTransaction")
            .field("recorder", &self.recorder)
            .finish()
    }
}

impl<'a> TimedTransaction<'a> {
    /// Wrap a transaction started elsewhere (e.g. with `Client::build_transaction`).
    pub fn new(transaction: Transaction<'a>, recorder: Recorder) -> Self {
        Self {
            inner: transaction,
            recorder,
            statement_cache: CacheRef::default(),
        }
    }

    /// Commit (timed as `COMMIT`).
    pub async fn commit(self) -> Result<(), Error> {
        let recorder = self.recorder.clone();
        ops::control(&recorder, "COMMIT", self.inner.commit()).await
    }

    /// Roll back (timed as `ROLLBACK`).
    pub async fn rollback(self) -> Result<(), Error> {
        let recorder = self.recorder.clone();
        ops::control(&recorder, "ROLLBACK", self.inner.rollback()).await
    }

    /// Like [`Transaction::savepoint`].
    pub async fn savepoint<I: Into<String>>(
        &mut self,
        name: I,
    ) -> Result<TimedTransaction<'_>, Error> {
        let (recorder, cache) = (self.recorder.clone(), self.statement_cache.clone());
        let tx = ops::control(&recorder, "SAVEPOINT", self.inner.savepoint(name)).await?;
        Ok(TimedTransaction {
            inner: tx,
            recorder,
            statement_cache: cache,
        })
    }

    /// Like deadpool's `prepare_cached`: reuse a statement from the pooled connection's cache
    /// (only transactions started from a `TimedObject` have one; others prepare every time).
    #[cfg(feature = "deadpool")]
    pub async fn prepare_cached(&self, query: &str) -> Result<TimedStatement, Error> {
        match &self.statement_cache {
            Some(cache) => crate::pool::prepare_cached(self.__ctx(), cache, query).await,
            None => self.prepare(query).await,
        }
    }

    /// The wrapped transaction (operations on it are not timed).
    pub fn get_ref(&self) -> &Transaction<'a> {
        &self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> Transaction<'a> {
        self.inner
    }
}

impl sealed::Sealed for TimedTransaction<'_> {}
impl GenericTimedClient for TimedTransaction<'_> {
    fn __ctx(&self) -> Ctx<'_> {
        Ctx {
            client: self.inner.client(),
            recorder: &self.recorder,
        }
    }

    async fn transaction(&mut self) -> Result<TimedTransaction<'_>, Error> {
        let (recorder, cache) = (self.recorder.clone(), self.statement_cache.clone());
        let tx = ops::control(&recorder, "SAVEPOINT", self.inner.transaction()).await?;
        Ok(TimedTransaction {
            inner: tx,
            recorder,
            statement_cache: cache,
        })
    }
}
