//! The operations, shared by [`GenericTimedClient`](super::GenericTimedClient)'s provided methods
//! and [`Named`](super::Named): resolve the label, start the recorder's operation, run the call,
//! finish the operation with its result (returned unchanged).

use std::future::Future;

use bytes::Buf;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{Error, Row, SimpleQueryMessage};

use super::__private::{Ctx, Target};
use super::{TimedStatement, ToTimedStatement};
use crate::recorder::{OnDrop, Recorder};
use crate::stream::{TimedCopyInSink, TimedCopyOutStream, TimedRowStream};
use crate::summary::QuerySummary;

/// Resolve the label of one call and the SQL text to attach to its span.
pub(crate) fn resolve<'t>(
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
