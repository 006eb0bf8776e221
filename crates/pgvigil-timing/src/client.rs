//! The timed wrappers: [`GenericTimedClient`] (the trait generic app code is written against),
//! [`TimedClient`], [`TimedTransaction`], the [`Named`] builder and [`TimedStatement`].

use std::fmt;
use std::future::Future;

use bytes::Buf;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{Client, Error, Row, SimpleQueryMessage, Statement, Transaction};

use crate::recorder::{OnDrop, Recorder};
use crate::stream::{TimedCopyInSink, TimedCopyOutStream, TimedRowStream};
use crate::summary::QuerySummary;

/// Types passed around between the trait's provided methods. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use tokio_postgres::{Client, Statement};

    use crate::{QuerySummary, Recorder};

    /// What a statement argument refers to.
    #[derive(Debug)]
    pub enum Target<'a> {
        /// SQL text.
        Sql(&'a str),
        /// A statement prepared through a timed client (carries its summary).
        Prepared(&'a Statement, &'a QuerySummary),
        /// A raw tokio-postgres statement (its SQL text is unknown).
        Raw(&'a Statement),
    }

    /// The connection and recorder behind a timed client.
    #[derive(Debug, Clone, Copy)]
    pub struct Ctx<'a> {
        /// The connection (for a transaction: the connection it runs on).
        pub client: &'a Client,
        /// Where to record.
        pub recorder: &'a Recorder,
    }
}

use __private::{Ctx, Target};

pub(crate) mod sealed {
    #[allow(unreachable_pub)] // sealed-trait pattern: public but unnameable
    pub trait Sealed {}
}

/// A statement argument: SQL text (`&str`, `String`), a [`TimedStatement`] or a raw
/// [`tokio_postgres::Statement`] (recorded as `unknown` unless [`named`](GenericTimedClient::named),
/// since its SQL text is not available).
pub trait ToTimedStatement: sealed::Sealed + Sync {
    #[doc(hidden)]
    fn __target(&self) -> Target<'_>;
}

impl sealed::Sealed for str {}
impl ToTimedStatement for str {
    fn __target(&self) -> Target<'_> {
        Target::Sql(self)
    }
}
impl sealed::Sealed for String {}
impl ToTimedStatement for String {
    fn __target(&self) -> Target<'_> {
        Target::Sql(self)
    }
}
impl sealed::Sealed for Statement {}
impl ToTimedStatement for Statement {
    fn __target(&self) -> Target<'_> {
        Target::Raw(self)
    }
}
impl sealed::Sealed for TimedStatement {}
impl ToTimedStatement for TimedStatement {
    fn __target(&self) -> Target<'_> {
        Target::Prepared(&self.statement, &self.summary)
    }
}

/// A prepared statement that remembers its (bounded) name, so executing it records under the
/// same label as its SQL text would.
#[derive(Clone)]
pub struct TimedStatement {
    statement: Statement,
    summary: QuerySummary,
}

impl fmt::Debug for TimedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedStatement")
            .field("summary", &self.summary.summary())
            .field("statement", &self.statement)
            .finish()
    }
}

impl TimedStatement {
    /// Pair a tokio-postgres statement with a summary (see [`Recorder::summary_for`]).
    pub fn new(statement: Statement, summary: QuerySummary) -> Self {
        Self { statement, summary }
    }

    /// The statement name and operation recorded when it runs.
    pub fn summary(&self) -> &QuerySummary {
        &self.summary
    }

    /// The tokio-postgres statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// Parameter types.
    pub fn params(&self) -> &[Type] {
        self.statement.params()
    }

    /// Result columns.
    pub fn columns(&self) -> &[tokio_postgres::Column] {
        self.statement.columns()
    }

    /// The tokio-postgres statement.
    pub fn into_inner(self) -> Statement {
        self.statement
    }
}

/// Resolve the label of one call and the SQL text to attach to its span.
fn resolve<'t>(
    recorder: &Recorder,
    name: Option<&str>,
    target: &Target<'t>,
) -> (QuerySummary, Option<&'t str>) {
    match (name, target) {
        (Some(n), Target::Sql(sql)) => (recorder.named(n, Some(sql)), Some(sql)),
        (Some(n), Target::Prepared(_, s)) => {
            (s.renamed(recorder.shared.summarizer.intern(n)), None)
        }
        (Some(n), Target::Raw(_)) => (recorder.named(n, None), None),
        (None, Target::Sql(sql)) => (recorder.summary_for(sql), Some(sql)),
        (None, Target::Prepared(_, s)) => ((*s).clone(), None),
        (None, Target::Raw(_)) => (QuerySummary::unknown(), None),
    }
}

/// Run `$call` with `$s` bound to the SQL text or the statement.
macro_rules! dispatch {
    ($target:expr, |$s:ident| $call:expr) => {
        match $target {
            Target::Sql($s) => $call,
            Target::Prepared($s, _) | Target::Raw($s) => $call,
        }
    };
}

/// The operations, shared by the trait's provided methods and [`Named`].
pub(crate) mod ops {
    use super::*;

    pub(crate) async fn prepare(
        ctx: Ctx<'_>,
        name: Option<&str>,
        query: &str,
        types: &[Type],
    ) -> Result<TimedStatement, Error> {
        let (summary, sql) = resolve(ctx.recorder, name, &Target::Sql(query));
        let op_label = QuerySummary::new("PREPARE", summary.summary_arc().clone());
        let op = ctx.recorder.start(op_label, sql, OnDrop::Cancelled);
        let res = ctx.client.prepare_typed(query, types).await;
        op.finish(res, |_| 0)
            .map(|statement| TimedStatement::new(statement, summary))
    }

    pub(crate) async fn query<T: ?Sized + ToTimedStatement>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.query(s, params).await);
        op.finish(res, |rows| rows.len() as u64)
    }

    pub(crate) async fn query_one<T: ?Sized + ToTimedStatement>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.query_one(s, params).await);
        op.finish(res, |_| 1)
    }

    pub(crate) async fn query_opt<T: ?Sized + ToTimedStatement>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.query_opt(s, params).await);
        op.finish(res, |row| u64::from(row.is_some()))
    }

    pub(crate) async fn query_raw<T, P, I>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
        params: I,
    ) -> Result<TimedRowStream, Error>
    where
        T: ?Sized + ToTimedStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.query_raw(s, params).await);
        match res {
            Ok(stream) => Ok(TimedRowStream::new(stream, op)),
            Err(e) => {
                op.finish_err(&e);
                Err(e)
            }
        }
    }

    pub(crate) async fn query_typed(
        ctx: Ctx<'_>,
        name: Option<&str>,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        let (label, sql) = resolve(ctx.recorder, name, &Target::Sql(query));
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = ctx.client.query_typed(query, params).await;
        op.finish(res, |rows| rows.len() as u64)
    }

    pub(crate) async fn query_typed_raw<P, I>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        query: &str,
        params: I,
    ) -> Result<TimedRowStream, Error>
    where
        P: BorrowToSql,
        I: IntoIterator<Item = (P, Type)>,
    {
        let (label, sql) = resolve(ctx.recorder, name, &Target::Sql(query));
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = ctx.client.query_typed_raw(query, params).await;
        match res {
            Ok(stream) => Ok(TimedRowStream::new(stream, op)),
            Err(e) => {
                op.finish_err(&e);
                Err(e)
            }
        }
    }

    pub(crate) async fn execute<T: ?Sized + ToTimedStatement>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.execute(s, params).await);
        op.finish(res, |n| *n)
    }

    pub(crate) async fn execute_raw<T, P, I>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
        params: I,
    ) -> Result<u64, Error>
    where
        T: ?Sized + ToTimedStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.execute_raw(s, params).await);
        op.finish(res, |n| *n)
    }

    pub(crate) async fn copy_in<T, U>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
    ) -> Result<TimedCopyInSink<U>, Error>
    where
        T: ?Sized + ToTimedStatement,
        U: Buf + 'static + Send,
    {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.copy_in(s).await);
        match res {
            Ok(sink) => Ok(TimedCopyInSink::new(sink, op)),
            Err(e) => {
                op.finish_err(&e);
                Err(e)
            }
        }
    }

    pub(crate) async fn copy_out<T: ?Sized + ToTimedStatement>(
        ctx: Ctx<'_>,
        name: Option<&str>,
        statement: &T,
    ) -> Result<TimedCopyOutStream, Error> {
        let target = statement.__target();
        let (label, sql) = resolve(ctx.recorder, name, &target);
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = dispatch!(target, |s| ctx.client.copy_out(s).await);
        match res {
            Ok(stream) => Ok(TimedCopyOutStream::new(stream, op)),
            Err(e) => {
                op.finish_err(&e);
                Err(e)
            }
        }
    }

    pub(crate) async fn simple_query(
        ctx: Ctx<'_>,
        name: Option<&str>,
        query: &str,
    ) -> Result<Vec<SimpleQueryMessage>, Error> {
        let (label, sql) = resolve(ctx.recorder, name, &Target::Sql(query));
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = ctx.client.simple_query(query).await;
        op.finish(res, |msgs| {
            msgs.iter()
                .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                .count() as u64
        })
    }

    pub(crate) async fn batch_execute(
        ctx: Ctx<'_>,
        name: Option<&str>,
        query: &str,
    ) -> Result<(), Error> {
        let (label, sql) = resolve(ctx.recorder, name, &Target::Sql(query));
        let op = ctx.recorder.start(label, sql, OnDrop::Cancelled);
        let res = ctx.client.batch_execute(query).await;
        op.finish(res, |_| 0)
    }

    /// Time a transaction-control round trip (BEGIN, COMMIT, ROLLBACK, SAVEPOINT).
    pub(crate) async fn control<F: Future<Output = Result<R, Error>>, R>(
        recorder: &Recorder,
        keyword: &str,
        fut: F,
    ) -> Result<R, Error> {
        let op = recorder.start(recorder.summary_for(keyword), None, OnDrop::Cancelled);
        let res = fut.await;
        op.finish(res, |_| 0)
    }
}

/// The tokio-postgres client API, timed. Implemented by [`TimedClient`], [`TimedTransaction`] and
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

    /// Like [`Client::prepare`]; the statement remembers its name.
    fn prepare(&self, query: &str) -> impl Future<Output = Result<TimedStatement, Error>> + Send {
        ops::prepare(self.__ctx(), None, query, &[])
    }

    /// Like [`Client::prepare_typed`].
    fn prepare_typed(
        &self,
        query: &str,
        parameter_types: &[Type],
    ) -> impl Future<Output = Result<TimedStatement, Error>> + Send {
        ops::prepare(self.__ctx(), None, query, parameter_types)
    }

    /// Like [`Client::query`].
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

    /// Like [`Client::query_one`].
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

    /// Like [`Client::query_opt`].
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

    /// Like [`Client::query_raw`]; the stream is timed until it ends or is dropped.
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

    /// Like [`Client::query_typed`].
    fn query_typed(
        &self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send {
        ops::query_typed(self.__ctx(), None, query, params)
    }

    /// Like [`Client::query_typed_raw`]; the stream is timed until it ends or is dropped.
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

    /// Like [`Client::execute`].
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

    /// Like [`Client::execute_raw`].
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

    /// Like [`Client::copy_in`]; timed until the sink is finished (or dropped: aborted).
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

    /// Like [`Client::copy_out`]; timed until the stream ends or is dropped.
    fn copy_out<T>(
        &self,
        statement: &T,
    ) -> impl Future<Output = Result<TimedCopyOutStream, Error>> + Send
    where
        T: ?Sized + ToTimedStatement,
    {
        ops::copy_out(self.__ctx(), None, statement)
    }

    /// Like [`Client::simple_query`] (recorded as one operation named after the first statement).
    fn simple_query(
        &self,
        query: &str,
    ) -> impl Future<Output = Result<Vec<SimpleQueryMessage>, Error>> + Send {
        ops::simple_query(self.__ctx(), None, query)
    }

    /// Like [`Client::batch_execute`] (recorded as one operation named after the first
    /// statement).
    fn batch_execute(&self, query: &str) -> impl Future<Output = Result<(), Error>> + Send {
        ops::batch_execute(self.__ctx(), None, query)
    }

    /// Like [`Client::transaction`] (or a savepoint inside a transaction); `BEGIN`, `COMMIT` and
    /// `ROLLBACK` are timed too.
    fn transaction(&mut self) -> impl Future<Output = Result<TimedTransaction<'_>, Error>> + Send;

    /// Like [`Client::cancel_token`].
    fn cancel_token(&self) -> tokio_postgres::CancelToken {
        self.__ctx().client.cancel_token()
    }

    /// Like [`Client::is_closed`].
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
