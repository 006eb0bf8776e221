//! deadpool-postgres support: [`TimedPool`] hands out [`TimedObject`]s and feeds the
//! `db.client.connection.*` metrics (count by state, max, pending requests, wait and use time,
//! timeouts).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::{Object, Pool, PoolError, StatementCache};
use tokio_postgres::{Client, Error};

use crate::client::__private::Ctx;
use crate::client::{GenericTimedClient, TimedStatement, TimedTransaction, ops};
use crate::recorder::{PoolStatus, Recorder};

/// Pool name used by [`Recorder::wrap_pool`].
pub const DEFAULT_POOL_NAME: &str = "default";

impl Recorder {
    /// Wrap a deadpool-postgres pool as `db.client.connection.pool.name="default"`.
    pub fn wrap_pool(&self, pool: Pool) -> TimedPool {
        TimedPool::new(pool, self.clone(), DEFAULT_POOL_NAME)
    }
}

/// A deadpool-postgres [`Pool`] whose checkouts are timed and whose connections are
/// [`TimedObject`]s. Cheap to clone, like the pool.
#[derive(Clone)]
pub struct TimedPool {
    pool: Pool,
    recorder: Recorder,
    name: Arc<str>,
}

impl fmt::Debug for TimedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedPool")
            .field("name", &self.name)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl TimedPool {
    /// Wrap `pool`, reporting it as `db.client.connection.pool.name` = `name`. The pool gauges
    /// are sampled at every scrape for as long as the pool lives.
    pub fn new(pool: Pool, recorder: Recorder, name: &str) -> Self {
        let weak = pool.weak();
        recorder.register_pool(name, move || {
            weak.upgrade().map(|pool| {
                let s = pool.status();
                PoolStatus {
                    max: s.max_size as u64,
                    idle: s.available as u64,
                    used: s.size.saturating_sub(s.available) as u64,
                    pending_requests: s.waiting as u64,
                }
            })
        });
        Self {
            pool,
            recorder,
            name: Arc::from(name),
        }
    }

    /// Check a connection out, recording the wait (`db.client.connection.wait_time`) and
    /// timeouts. Errors are deadpool's, unchanged.
    pub async fn get(&self) -> Result<TimedObject, PoolError> {
        let start = Instant::now();
        let res = self.pool.get().await;
        self.recorder.record_pool_wait(&self.name, start.elapsed());
        match res {
            Ok(object) => Ok(TimedObject {
                inner: Some(object),
                recorder: self.recorder.clone(),
                pool_name: self.name.clone(),
                checked_out: Instant::now(),
            }),
            Err(e) => {
                if matches!(e, PoolError::Timeout(_)) {
                    self.recorder.record_pool_timeout(&self.name);
                }
                Err(e)
            }
        }
    }

    /// The pool's name label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The recorder.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The wrapped pool (checkouts through it are not timed).
    pub fn get_ref(&self) -> &Pool {
        &self.pool
    }

    /// Unwrap.
    pub fn into_inner(self) -> Pool {
        self.pool
    }
}

/// A pooled connection whose operations are timed; returning it to the pool (drop) records
/// `db.client.connection.use_time`.
pub struct TimedObject {
    // Always `Some` until `into_inner`/drop.
    inner: Option<Object>,
    recorder: Recorder,
    pool_name: Arc<str>,
    checked_out: Instant,
}

impl fmt::Debug for TimedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedObject")
            .field("pool", &self.pool_name)
            .field("checked_out_for", &self.checked_out.elapsed())
            .finish()
    }
}

impl TimedObject {
    /// Wrap a pooled object checked out elsewhere (its wait time is not recorded).
    pub fn new(object: Object, recorder: Recorder, pool_name: &str) -> Self {
        Self {
            inner: Some(object),
            recorder,
            pool_name: Arc::from(pool_name),
            checked_out: Instant::now(),
        }
    }

    fn object(&self) -> &Object {
        self.inner
            .as_ref()
            .expect("TimedObject used after into_inner")
    }

    /// Like deadpool's `prepare_cached`: reuse the connection's cached statement. The prepare
    /// round trip on a cache miss is not recorded; executions are, under the statement's name.
    pub async fn prepare_cached(&self, query: &str) -> Result<TimedStatement, Error> {
        prepare_cached(self.__ctx(), &self.object().statement_cache, query).await
    }

    /// The pooled object (operations on it are not timed).
    pub fn get_ref(&self) -> &Object {
        self.object()
    }

    /// Unwrap (records the use time so far).
    pub fn into_inner(mut self) -> Object {
        self.record_use();
        self.inner
            .take()
            .expect("TimedObject used after into_inner")
    }

    fn record_use(&self) {
        self.recorder
            .record_pool_use(&self.pool_name, self.checked_out.elapsed());
    }
}

impl Drop for TimedObject {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.record_use();
        }
    }
}

pub(crate) async fn prepare_cached(
    ctx: Ctx<'_>,
    cache: &StatementCache,
    query: &str,
) -> Result<TimedStatement, Error> {
    let statement = cache.prepare(ctx.client, query).await?;
    Ok(TimedStatement::new(
        statement,
        ctx.recorder.summary_for(query),
    ))
}

impl crate::client::sealed::Sealed for TimedObject {}
impl GenericTimedClient for TimedObject {
    fn __ctx(&self) -> Ctx<'_> {
        let client: &Client = self.object();
        Ctx {
            client,
            recorder: &self.recorder,
        }
    }

    async fn transaction(&mut self) -> Result<TimedTransaction<'_>, Error> {
        let recorder = self.recorder.clone();
        let object = self
            .inner
            .as_mut()
            .expect("TimedObject used after into_inner");
        let cache = object.statement_cache.clone();
        let client: &mut Client = object;
        let tx = ops::control(&recorder, "BEGIN", client.transaction()).await?;
        let mut tx = TimedTransaction::new(tx, recorder);
        tx.statement_cache = Some(cache);
        Ok(tx)
    }
}
