//! N+1 detection: count statement executions per unit of work (a request, a job) and report the
//! statements that ran more than a threshold times in one unit.
//!
//! What happens, step by step:
//!
//! 1. A unit starts: [`Recorder::unit_of_work`] (an explicit scope: [`UnitOfWork::scope`] for a
//!    future, [`UnitOfWork::enter`] for synchronous code), or, with feature `tracing-subscriber`,
//!    any tracing span with a field named [`UNIT_OF_WORK_FIELD`] while [`UnitOfWorkLayer`] is
//!    installed (`info_span!("request", unit_of_work = "GET /campaigns")`).
//! 2. While the unit's future is polled (or its guard or span is entered) it is the thread's
//!    *current unit* (a thread-local stack, set and restored around each poll, so it follows the
//!    task across worker threads; a task spawned inside is not part of it).
//! 3. Every operation a timed client starts looks at the current unit: one thread-local read,
//!    then, inside a unit, one mutex-guarded hash-map increment keyed by the statement's
//!    fingerprint (its normalised text, computed once per SQL text by the summary cache).
//!    Transaction control (BEGIN, COMMIT, SAVEPOINT, …), PREPARE round trips and raw
//!    `tokio_postgres::Statement`s (no SQL text) are not counted. With
//!    [`RecorderBuilder::n_plus_one_threshold`](crate::RecorderBuilder::n_plus_one_threshold)
//!    `None` nothing is looked up at all.
//! 4. When the unit ends (the future completes or is dropped, the guard is dropped, the span
//!    closes), each statement that ran **more than** the threshold (default 10) is reported once,
//!    with its final count: `db_client_n_plus_one_total{db_query_summary}` (every backend) is
//!    incremented, and a `warn!` on target `pgvigil_timing::n_plus_one` with `statement` (the
//!    normalised SQL), `db.query.summary`, `count`, `threshold` and `unit` is emitted with the unit's
//!    span as parent, which tracing-opentelemetry records as a span event.
//!
//! With the layer, add it *before* (inside) the OpenTelemetry layer, so the event reaches the span
//! before that layer exports it: `registry().with(recorder.unit_of_work_layer()).with(otel)`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::recorder::Recorder;
use crate::summary::QuerySummary;

/// The span field that marks a span as a unit of work for [`UnitOfWorkLayer`]; its value (a
/// string) names the unit, else the span's name does.
pub const UNIT_OF_WORK_FIELD: &str = "unit_of_work";

/// Default threshold: a statement running more than this many times in one unit is reported.
pub const DEFAULT_N_PLUS_ONE_THRESHOLD: u64 = 10;

thread_local! {
    static CURRENT: RefCell<Vec<Arc<UnitState>>> = const { RefCell::new(Vec::new()) };
}

pub(crate) struct UnitState {
    name: Arc<str>,
    parent: Option<tracing::span::Id>,
    recorder: Recorder,
    threshold: u64,
    counts: Mutex<HashMap<u64, (u64, QuerySummary)>>,
}

impl UnitState {
    fn new(recorder: &Recorder, name: Arc<str>, parent: Option<tracing::span::Id>) -> Self {
        Self {
            name,
            parent,
            threshold: recorder
                .n_plus_one_threshold()
                .unwrap_or(DEFAULT_N_PLUS_ONE_THRESHOLD),
            recorder: recorder.clone(),
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, label: &QuerySummary) {
        let Some(facts) = label.facts() else { return };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .entry(facts.fingerprint())
            .or_insert_with(|| (0, label.clone()))
            .0 += 1;
    }
}

impl Drop for UnitState {
    fn drop(&mut self) {
        let counts = std::mem::take(self.counts.get_mut().unwrap_or_else(|e| e.into_inner()));
        let mut over: Vec<_> = counts
            .into_values()
            .filter(|(n, _)| *n > self.threshold)
            .collect();
        over.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (count, label) in over {
            self.recorder
                .shared
                .backends
                .n_plus_one(label.summary_arc());
            let statement = label.facts().map_or("", |f| f.normalized());
            tracing::warn!(
                target: "pgvigil_timing::n_plus_one",
                parent: self.parent.clone(),
                statement,
                db.query.summary = label.summary(),
                count,
                threshold = self.threshold,
                unit = &*self.name,
                "N+1: {} ran {count} times in {} (threshold {}); load the rows in one query \
                 (a join, or = ANY($1))",
                label.summary(),
                self.name,
                self.threshold,
            );
        }
    }
}

/// Count `label` into the thread's current unit of work, if any.
pub(crate) fn count(label: &QuerySummary) {
    if matches!(
        label.operation(),
        "BEGIN"
            | "START"
            | "COMMIT"
            | "END"
            | "ROLLBACK"
            | "ABORT"
            | "SAVEPOINT"
            | "RELEASE"
            | "PREPARE"
    ) {
        return;
    }
    CURRENT.with(|c| {
        if let Some(unit) = c.borrow().last() {
            unit.count(label);
        }
    });
}

fn push(unit: &Arc<UnitState>) {
    CURRENT.with(|c| c.borrow_mut().push(unit.clone()));
}

fn pop(unit: &Arc<UnitState>) {
    CURRENT.with(|c| {
        let mut stack = c.borrow_mut();
        if let Some(i) = stack.iter().rposition(|u| Arc::ptr_eq(u, unit)) {
            stack.remove(i);
        }
    });
}

/// One unit of work (a request, a job) for N+1 detection. See the [module docs](self).
///
/// ```no_run
/// # async fn demo(recorder: pgvigil_timing::Recorder, db: pgvigil_timing::TimedClient)
/// # -> Result<(), tokio_postgres::Error> {
/// use pgvigil_timing::GenericTimedClient;
///
/// recorder
///     .unit_of_work("job: send_reminders")
///     .scope(async {
///         for id in 1..=50_i64 {
///             // Reported once when the job ends: "SELECT campaign ran 50 times".
///             db.query_one("SELECT name FROM campaign WHERE id = $1", &[&id]).await?;
///         }
///         Ok::<_, tokio_postgres::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub struct UnitOfWork {
    state: Arc<UnitState>,
}

impl fmt::Debug for UnitOfWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("name", &self.state.name)
            .field("threshold", &self.state.threshold)
            .finish()
    }
}

impl Recorder {
    /// Start a unit of work named `name` (reported with it); its report's parent span is the
    /// current span.
    pub fn unit_of_work(&self, name: impl Into<Arc<str>>) -> UnitOfWork {
        UnitOfWork {
            state: Arc::new(UnitState::new(
                self,
                name.into(),
                tracing::Span::current().id(),
            )),
        }
    }
}

impl UnitOfWork {
    /// The unit's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Executions counted so far, by summary (statements with the same summary summed).
    pub fn counts(&self) -> Vec<(String, u64)> {
        let counts = self.state.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut by: HashMap<String, u64> = HashMap::new();
        for (n, label) in counts.values() {
            *by.entry(label.summary().to_owned()).or_default() += n;
        }
        let mut out: Vec<_> = by.into_iter().collect();
        out.sort();
        out
    }

    /// Run `fut` as this unit: it is current whenever `fut` is polled; the unit is reported
    /// when the returned future completes or is dropped.
    pub fn scope<F: Future>(self, fut: F) -> InUnitOfWork<F> {
        InUnitOfWork {
            fut,
            unit: self.state,
        }
    }

    /// Make this unit current on this thread until the guard is dropped (synchronous code;
    /// the guard is not `Send`). The unit is reported when the `UnitOfWork` is dropped.
    pub fn enter(&self) -> EnteredUnit<'_> {
        push(&self.state);
        EnteredUnit {
            unit: self,
            _not_send: PhantomData,
        }
    }
}

/// Guard of [`UnitOfWork::enter`].
#[derive(Debug)]
pub struct EnteredUnit<'a> {
    unit: &'a UnitOfWork,
    _not_send: PhantomData<*const ()>,
}

impl Drop for EnteredUnit<'_> {
    fn drop(&mut self) {
        pop(&self.unit.state);
    }
}

pin_project! {
    /// A future running as a unit of work ([`UnitOfWork::scope`]).
    #[must_use = "futures do nothing unless polled"]
    pub struct InUnitOfWork<F> {
        #[pin]
        fut: F,
        unit: Arc<UnitState>,
    }
}

impl<F> fmt::Debug for InUnitOfWork<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InUnitOfWork")
            .field("unit", &self.unit.name)
            .finish()
    }
}

impl<F: Future> Future for InUnitOfWork<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        push(this.unit);
        let out = this.fut.poll(cx);
        pop(this.unit);
        out
    }
}

#[cfg(feature = "tracing-subscriber")]
pub use layer::UnitOfWorkLayer;

#[cfg(feature = "tracing-subscriber")]
mod layer {
    use std::sync::Arc;

    use tracing::span::{Attributes, Id};
    use tracing::{Subscriber, field::Field};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::registry::LookupSpan;

    use super::{UNIT_OF_WORK_FIELD, UnitState, pop, push};
    use crate::recorder::Recorder;

    /// Makes every span with a [`UNIT_OF_WORK_FIELD`] field a unit of work (feature
    /// `tracing-subscriber`). Obtained from [`Recorder::unit_of_work_layer`].
    #[derive(Debug, Clone)]
    pub struct UnitOfWorkLayer {
        recorder: Recorder,
    }

    impl Recorder {
        /// A tracing-subscriber layer that turns spans marked with a `unit_of_work` field into
        /// units of work; add it before the OpenTelemetry layer.
        pub fn unit_of_work_layer(&self) -> UnitOfWorkLayer {
            UnitOfWorkLayer {
                recorder: self.clone(),
            }
        }
    }

    struct Unit(Arc<UnitState>);

    #[derive(Default)]
    struct NameVisitor(Option<String>);

    impl tracing::field::Visit for NameVisitor {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == UNIT_OF_WORK_FIELD {
                self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl<S> Layer<S> for UnitOfWorkLayer
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            if attrs
                .metadata()
                .fields()
                .field(UNIT_OF_WORK_FIELD)
                .is_none()
            {
                return;
            }
            let mut name = NameVisitor::default();
            attrs.record(&mut name);
            let name = name.0.unwrap_or_else(|| attrs.metadata().name().to_owned());
            if let Some(span) = ctx.span(id) {
                let state = UnitState::new(&self.recorder, Arc::from(name), Some(id.clone()));
                span.extensions_mut().insert(Unit(Arc::new(state)));
            }
        }

        fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(id) {
                if let Some(unit) = span.extensions().get::<Unit>() {
                    push(&unit.0);
                }
            }
        }

        fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(id) {
                if let Some(unit) = span.extensions().get::<Unit>() {
                    pop(&unit.0);
                }
            }
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            // Dropping the last handle reports the unit, while the span still exists.
            let unit = ctx
                .span(&id)
                .and_then(|span| span.extensions_mut().remove::<Unit>());
            drop(unit);
        }
    }
}
