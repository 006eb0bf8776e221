//! Streams and sinks that stay timed until they finish or are dropped.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use pin_project_lite::pin_project;
use tokio_postgres::{CopyInSink, CopyOutStream, Error, Row, RowStream};

use crate::recorder::{OnDrop, Op};

pin_project! {
    /// A [`RowStream`] timed from the call until the last row (or an error, or drop).
    #[must_use = "streams do nothing unless polled"]
    pub struct TimedRowStream {
        #[pin]
        inner: RowStream,
        op: Option<Op>,
    }
}

impl fmt::Debug for TimedRowStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedRowStream")
            .field("op", &self.op)
            .finish()
    }
}

impl TimedRowStream {
    pub(crate) fn new(inner: RowStream, mut op: Op) -> Self {
        // The app may legitimately stop reading early: that is not an error.
        op.set_on_drop(OnDrop::Complete);
        Self {
            inner,
            op: Some(op),
        }
    }

    /// Like [`RowStream::rows_affected`].
    pub fn rows_affected(&self) -> Option<u64> {
        self.inner.rows_affected()
    }
}

impl Stream for TimedRowStream {
    type Item = Result<Row, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let _enter = this.op.as_ref().map(|op| op.span().enter());
        let item = ready!(this.inner.poll_next(cx));
        drop(_enter);
        match &item {
            Some(Ok(_)) => {
                if let Some(op) = this.op {
                    op.add_rows(1);
                }
            }
            Some(Err(e)) => {
                if let Some(op) = this.op.take() {
                    op.finish_err(e);
                }
            }
            None => {
                if let Some(op) = this.op.take() {
                    op.finish_ok();
                }
            }
        }
        Poll::Ready(item)
    }
}

pin_project! {
    /// A [`CopyOutStream`] timed from the call until the last chunk (or an error, or drop).
    /// `db.response.returned_rows` counts COPY data messages (one per row for PostgreSQL).
    #[must_use = "streams do nothing unless polled"]
    pub struct TimedCopyOutStream {
        #[pin]
        inner: CopyOutStream,
        op: Option<Op>,
    }
}

impl fmt::Debug for TimedCopyOutStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedCopyOutStream")
            .field("op", &self.op)
            .finish()
    }
}

impl TimedCopyOutStream {
    pub(crate) fn new(inner: CopyOutStream, mut op: Op) -> Self {
        op.set_on_drop(OnDrop::Complete);
        Self {
            inner,
            op: Some(op),
        }
    }
}

impl Stream for TimedCopyOutStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = ready!(this.inner.poll_next(cx));
        match &item {
            Some(Ok(_)) => {
                if let Some(op) = this.op {
                    op.add_rows(1);
                }
            }
            Some(Err(e)) => {
                if let Some(op) = this.op.take() {
                    op.finish_err(e);
                }
            }
            None => {
                if let Some(op) = this.op.take() {
                    op.finish_ok();
                }
            }
        }
        Poll::Ready(item)
    }
}

pin_project! {
    /// A [`CopyInSink`] timed from the call until [`finish`](Self::finish) / `close` returns.
    /// Dropping it unfinished aborts the COPY (as tokio-postgres does) and records
    /// `error.type = "cancelled"`.
    #[must_use = "sinks do nothing unless polled"]
    pub struct TimedCopyInSink<T> {
        #[pin]
        inner: CopyInSink<T>,
        op: Option<Op>,
    }
}

impl<T> fmt::Debug for TimedCopyInSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedCopyInSink")
            .field("op", &self.op)
            .finish()
    }
}

impl<T> TimedCopyInSink<T>
where
    T: Buf + 'static + Send,
{
    pub(crate) fn new(inner: CopyInSink<T>, op: Op) -> Self {
        Self {
            inner,
            op: Some(op),
        }
    }

    /// Like [`CopyInSink::poll_finish`].
    pub fn poll_finish(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64, Error>> {
        let this = self.project();
        let res = ready!(this.inner.poll_finish(cx));
        if let Some(op) = this.op.take() {
            match &res {
                Ok(rows) => {
                    let mut op = op;
                    op.add_rows(*rows);
                    op.finish_ok();
                }
                Err(e) => op.finish_err(e),
            }
        }
        Poll::Ready(res)
    }

    /// Like [`CopyInSink::finish`]: completes the copy, returning the number of rows inserted.
    pub async fn finish(mut self: Pin<&mut Self>) -> Result<u64, Error> {
        std::future::poll_fn(|cx| self.as_mut().poll_finish(cx)).await
    }

    fn fail(op: &mut Option<Op>, e: &Error) {
        if let Some(op) = op.take() {
            op.finish_err(e);
        }
    }
}

impl<T> Sink<T> for TimedCopyInSink<T>
where
    T: Buf + 'static + Send,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.project();
        let res = ready!(this.inner.poll_ready(cx));
        if let Err(e) = &res {
            Self::fail(this.op, e);
        }
        Poll::Ready(res)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Error> {
        let this = self.project();
        let res = this.inner.start_send(item);
        if let Err(e) = &res {
            Self::fail(this.op, e);
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.project();
        let res = ready!(this.inner.poll_flush(cx));
        if let Err(e) = &res {
            Self::fail(this.op, e);
        }
        Poll::Ready(res)
    }

    /// Equivalent to [`finish`](TimedCopyInSink::finish) without the row count.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_finish(cx).map_ok(|_| ())
    }
}
