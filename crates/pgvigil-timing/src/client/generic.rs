//! [`GenericTimedClient`], the trait generic app code is written against, and [`Named`].

use std::fmt;
use std::future::Future;

use bytes::Buf;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{Error, Row, SimpleQueryMessage};

use super::__private::Ctx;
use super::{TimedStatement, TimedTransaction, ToTimedStatement, ops, sealed};
use crate::recorder::Recorder;
use crate::stream::{TimedCopyInSink, TimedCopyOutStream, TimedRowStream};

/// The tokio-postgres client API, timed. Implemented by [`TimedClient`](crate::TimedClient), [`TimedTransaction`](crate::TimedTransaction) and
/// (feature `deadpool`) `TimedObject`, so generic code runs on any of them:
///
/// ```no_run
/// use pgvigil_timing::GenericTimedClient;
///
/// async fn load_campaign(db: &impl GenericTimedClient, id: i64) -> Result<String, tokio_postgres::Error> {
///     let row = db.named("load_campaign")
///         .query_one("SELECT name FROM campaign WHERE id = $1", &[&id])
///         .await?;
///     Ok(row.get(0))
/// }
/// ```
///
/// Method names, arguments and results mirror tokio-postgres (`tokio_postgres::GenericClient` is
/// sealed, hence this trait); errors are returned unchanged. Streams, sinks and futures are timed
/// until they finish or are dropped (a dropped future or unfinished COPY IN is recorded with
/// `error.type = "cancelled"`; a row or COPY OUT stream dropped early is recorded as done).
///
/// This trait is sealed.
pub trait GenericTimedClient: sealed::Sealed + Send + Sync {
    #[doc(hidden)]
    fn __ctx(&self) -> Ctx<'_>;

    /// Name the next operation (`db.query.summary`) instead of deriving it from the SQL text.
    /// Names share the recorder's bounded label budget.
    fn named<'a>(&'a self, name: &'a str) -> Named<'a, Self>
    where
        Self: Sized,
    {
        Named { inner: self, name }
    }

    /// The recorder this client reports to.
    fn recorder(&self) -> &Recorder {
        self.__ctx().recorder
    }

    /// Like [`Client::prepare`](tokio_postgres::Client::prepare); the statement remembers its name.
    fn prepare(&self, query: &str) -> impl Future<Output = Result<TimedStatement, Error>> + Send {
        ops::prepare(self.__ctx(), None, query, &[])
    }

    /// Like [`Client::prepare_typed`](tokio_postgres::Client::prepare_typed).
    fn prepare_typed(
        &self,
        query: &str,
        parameter_types: &[Type],
    ) -> impl Future<Output = Result<TimedStatement, Error>> + Send {
        ops::prepare(self.__ctx(), None, query, parameter_types)
    }

    /// Like [`Client::query`](tokio_postgres::Client::query).
    fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::query(self.__ctx(), None, statement, params)
    }

    /// Like [`Client::query_one`](tokio_postgres::Client::query_one).
    fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::query_one(self.__ctx(), None, statement, params)
    }

    /// Like [`Client::query_opt`](tokio_postgres::Client::query_opt).
    fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::query_opt(self.__ctx(), None, statement, params)
    }

    /// Like [`Client::query_raw`](tokio_postgres::Client::query_raw); the stream is timed until it ends or is dropped.
    fn query_raw<T, P, I>(
        &self,
        statement: &T,
        params: I,
    ) -> impl Future<Output = Result<TimedRowStream, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
        P: BorrowToSql + Send,
        I: IntoIterator<Item = P> + Send,
        I::IntoIter: ExactSizeIterator + Send,
    {
        ops::query_raw(self.__ctx(), None, statement, params)
    }

    /// Like [`Client::query_typed`](tokio_postgres::Client::query_typed).
    fn query_typed(
        &self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send {
        ops::query_typed(self.__ctx(), None, query, params)
    }

    /// Like [`Client::query_typed_raw`](tokio_postgres::Client::query_typed_raw); the stream is timed until it ends or is dropped.
    fn query_typed_raw<P, I>(
        &self,
        query: &str,
        params: I,
    ) -> impl Future<Output = Result<TimedRowStream, Error>> + Send
    where
        P: BorrowToSql + Send,
        I: IntoIterator<Item = (P, Type)> + Send,
        I::IntoIter: Send,
    {
        ops::query_typed_raw(self.__ctx(), None, query, params)
    }

    /// Like [`Client::execute`](tokio_postgres::Client::execute).
    fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::execute(self.__ctx(), None, statement, params)
    }

    /// Like [`Client::execute_raw`](tokio_postgres::Client::execute_raw).
    fn execute_raw<T, P, I>(
        &self,
        statement: &T,
        params: I,
    ) -> impl Future<Output = Result<u64, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
        P: BorrowToSql + Send,
        I: IntoIterator<Item = P> + Send,
        I::IntoIter: ExactSizeIterator + Send,
    {
        ops::execute_raw(self.__ctx(), None, statement, params)
    }

    /// Like [`Client::copy_in`](tokio_postgres::Client::copy_in); timed until the sink is finished (or dropped: aborted).
    fn copy_in<T, U>(
        &self,
        statement: &T,
    ) -> impl Future<Output = Result<TimedCopyInSink<U>, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
        U: Buf + 'static + Send,
    {
        ops::copy_in(self.__ctx(), None, statement)
    }

    /// Like [`Client::copy_out`](tokio_postgres::Client::copy_out); timed until the stream ends or is dropped.
    fn copy_out<T>(
        &self,
        statement: &T,
    ) -> impl Future<Output = Result<TimedCopyOutStream, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::copy_out(self.__ctx(), None, statement)
    }

    /// Like [`Client::simple_query`](tokio_postgres::Client::simple_query) (recorded as one operation named after the first statement).
    fn simple_query(
        &self,
        query: &str,
    ) -> impl Future<Output = Result<Vec<SimpleQueryMessage>, Error>> + Send {
        ops::simple_query(self.__ctx(), None, query)
    }

    /// Like [`Client::batch_execute`](tokio_postgres::Client::batch_execute) (recorded as one operation named after the first
    /// statement).
    fn batch_execute(&self, query: &str) -> impl Future<Output = Result<(), Error>> + Send {
        ops::batch_execute(self.__ctx(), None, query)
    }

    /// Like [`Client::transaction`](tokio_postgres::Client::transaction) (or a savepoint inside a transaction); `BEGIN`, `COMMIT` and
    /// `ROLLBACK` are timed too.
    fn transaction(&mut self) -> impl Future<Output = Result<TimedTransaction<'_>, Error>> + Send;

    /// Like [`Client::cancel_token`](tokio_postgres::Client::cancel_token).
    fn cancel_token(&self) -> tokio_postgres::CancelToken {
        self.__ctx().client.cancel_token()
    }

    /// Like [`Client::is_closed`](tokio_postgres::Client::is_closed).
    fn is_closed(&self) -> bool {
        self.__ctx().client.is_closed()
    }
}

/// One operation with a caller-chosen name: `client.named("load_campaign").query(..)`.
///
/// The name becomes `db.query.summary` (and the span name); `db.operation.name` is still derived
/// from the SQL. Names count against the recorder's label budget like derived ones.
pub struct Named<'a, C> {
    inner: &'a C,
    name: &'a str,
}

impl<C> fmt::Debug for Named<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named").field("name", &self.name).finish()
    }
}

impl<C: GenericTimedClient> Named<'_, C> {
    /// Like [`GenericTimedClient::prepare`]: every execution of the statement carries the name.
    pub async fn prepare(&self, query: &str) -> Result<TimedStatement, Error> {
        ops::prepare(self.inner.__ctx(), Some(self.name), query, &[]).await
    }

    /// Like [`GenericTimedClient::query`].
    pub async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::query(self.inner.__ctx(), Some(self.name), statement, params).await
    }

    /// Like [`GenericTimedClient::query_one`].
    pub async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error>
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::query_one(self.inner.__ctx(), Some(self.name), statement, params).await
    }

    /// Like [`GenericTimedClient::query_opt`].
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::query_opt(self.inner.__ctx(), Some(self.name), statement, params).await
    }

    /// Like [`GenericTimedClient::query_raw`].
    pub async fn query_raw<T, P, I>(
        &self,
        statement: &T,
        params: I,
    ) -> Result<TimedRowStream, Error>
    where
        T: ?Sized + ToTimedStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        ops::query_raw(self.inner.__ctx(), Some(self.name), statement, params).await
    }

    /// Like [`GenericTimedClient::query_typed`].
    pub async fn query_typed(
        &self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        ops::query_typed(self.inner.__ctx(), Some(self.name), query, params).await
    }

    /// Like [`GenericTimedClient::execute`].
    pub async fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error>
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::execute(self.inner.__ctx(), Some(self.name), statement, params).await
    }

    /// Like [`GenericTimedClient::execute_raw`].
    pub async fn execute_raw<T, P, I>(&self, statement: &T, params: I) -> Result<u64, Error>
    where
        T: ?Sized + ToTimedStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        ops::execute_raw(self.inner.__ctx(), Some(self.name), statement, params).await
    }

    /// Like [`GenericTimedClient::copy_in`].
    pub async fn copy_in<T, U>(&self, statement: &T) -> Result<TimedCopyInSink<U>, Error>
    where
        T: ?Sized + ToTimedStatement,
        U: Buf + 'static + Send,
    {
        ops::copy_in(self.inner.__ctx(), Some(self.name), statement).await
    }

    /// Like [`GenericTimedClient::copy_out`].
    pub async fn copy_out<T>(&self, statement: &T) -> Result<TimedCopyOutStream, Error>
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::copy_out(self.inner.__ctx(), Some(self.name), statement).await
    }

    /// Like [`GenericTimedClient::simple_query`].
    pub async fn simple_query(&self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        ops::simple_query(self.inner.__ctx(), Some(self.name), query).await
    }

    /// Like [`GenericTimedClient::batch_execute`].
    pub async fn batch_execute(&self, query: &str) -> Result<(), Error> {
        ops::batch_execute(self.inner.__ctx(), Some(self.name), query).await
    }
}
