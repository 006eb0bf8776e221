//! The timed wrappers: [`GenericTimedClient`] (the trait generic app code is written against),
//! [`TimedClient`], [`TimedTransaction`], the [`Named`] builder and [`TimedStatement`].
//!
//! * `statement`: what a statement argument is ([`ToTimedStatement`]) and [`TimedStatement`];
//! * `ops`: one function per tokio-postgres operation, shared by the trait and [`Named`]: resolve
//!   the label, start the recorder's `Op`, call the client, finish the `Op`;
//! * `generic`: the [`GenericTimedClient`] trait and [`Named`];
//! * `timed`: [`TimedClient`] and [`TimedTransaction`].

mod generic;
pub(crate) mod ops;
mod statement;
mod timed;

pub use generic::{GenericTimedClient, Named};
pub use statement::{TimedStatement, ToTimedStatement};
pub use timed::{TimedClient, TimedTransaction};

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

pub(crate) mod sealed {
    #[allow(unreachable_pub)] // sealed-trait pattern: public but unnameable
    pub trait Sealed {}
}
