//! The last hour of every source, for the status page's charts: a ring buffer of samples
//! taken from the daemon's own observations after each poll. No query of its own: a sample is
//! a few numbers copied out of what the collectors already reported.
//!
//! # What a sample holds, and what it costs
//!
//! One sample per *step*: the source's `poll_interval` clamped to 1 s..60 s, so at most 3,600
//! samples per source (a 1 s poll) and 240 at the default 15 s. A poll in the same step as the
//! previous sample replaces it (the poll duration keeps the step's maximum, so a slow poll is
//! not hidden). Samples older than [`WINDOW`] are dropped. Each sample is bounded: connection
//! counts by state, transactions holding writes, the poll's duration, the
//! [`TOP_STATEMENTS`] statements that took the most time in the interval, the [`MAX_TABLES`]
//! watched tables' live rows, and the verdicts of the [`MAX_IMPORTS`] newest imports. Names
//! (import ids, table names, query texts) are shared `Arc<str>`s: a sample reuses the previous
//! sample's copy, so an unchanged name costs one pointer per sample, not one string.
//! `benches/history.rs` measures the bytes per source; the README quotes it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::collect::Observations;
use crate::collect::imports::reconcile::Verdict;

/// How far back the charts look.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Statements kept per sample: those with the most execution time in the interval.
pub const TOP_STATEMENTS: usize = 5;
/// Tables kept per sample: exactly counted (allow-listed) tables first, then the largest.
pub const MAX_TABLES: usize = 8;
/// Imports kept per sample: the newest audit rows.
pub const MAX_IMPORTS: usize = 20;
const MIN_STEP: Duration = Duration::from_secs(1);
const MAX_STEP: Duration = Duration::from_secs(60);

/// Client connections by state against what applications may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connections {
    /// Running a statement.
    pub active: u32,
    /// Connected, doing nothing.
    pub idle: u32,
    /// Idle inside an open transaction (aborted ones included).
    pub idle_in_transaction: u32,
    /// Any other state (fastpath, disabled, unknown).
    pub other: u32,
    /// `max_connections` minus the reserved slots.
    pub usable: u32,
}

/// One statement's interval in a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementPoint {
    /// pg_stat_statements' queryid.
    pub queryid: i64,
    /// Its database.
    pub datname: Arc<str>,
    /// The normalised, truncated text, if pgvigil fetched it.
    pub query: Option<Arc<str>>,
    /// Mean execution time per call in the interval, seconds.
    pub mean_seconds: f32,
    /// Calls in the interval.
    pub calls: f32,
}

/// One table's row count in a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TablePoint {
    /// `datname.schema.table`.
    pub table: Arc<str>,
    /// The exact count where the table is allow-listed, else `n_live_tup`.
    pub live_rows: i64,
}

/// One import's verdict in a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportPoint {
    /// The audit row's import id.
    pub import_id: Arc<str>,
    /// The database of its audit table.
    pub datname: Arc<str>,
    /// pgvigil's verdict at that time.
    pub verdict: Verdict,
}

/// What one poll of a source left for the charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    /// Whether the source was up.
    pub up: bool,
    /// How long the poll (or the failed connection attempt) took; the step's longest.
    pub poll_seconds: f32,
    /// From the activity collector; `None` when it did not report.
    pub connections: Option<Connections>,
    /// Open transactions holding uncommitted writes.
    pub writing_xacts: Option<u32>,
    /// The top statements of the interval.
    pub statements: Box<[StatementPoint]>,
    /// The watched tables.
    pub tables: Box<[TablePoint]>,
    /// The newest imports.
    pub imports: Box<[ImportPoint]>,
}

/// One source's samples, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    step: u64,
    samples: VecDeque<Sample>,
}

impl Ring {
    /// An empty ring taking a sample every `step` (clamped to 1 s..60 s).
    pub fn new(step: Duration) -> Self {
        let step = step.clamp(MIN_STEP, MAX_STEP).as_secs().max(1);
        Ring {
            step,
            samples: VecDeque::with_capacity(Self::capacity_for(step)),
        }
    }

    fn capacity_for(step: u64) -> usize {
        (WINDOW.as_secs() / step) as usize + 1
    }

    /// The most samples this ring holds.
    pub fn capacity(&self) -> usize {
        Self::capacity_for(self.step)
    }

    /// Seconds between samples.
    pub fn step_seconds(&self) -> u64 {
        self.step
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl DoubleEndedIterator<Item = &Sample> + ExactSizeIterator {
        self.samples.iter()
    }

    /// The bytes this ring holds on the heap: its slots, each sample's lists, and every
    /// distinct name once (an `Arc<str>` is its text plus two counters). What
    /// `benches/history.rs` reports per source.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let mut names: std::collections::HashSet<*const u8> = std::collections::HashSet::new();
        let mut bytes = self.samples.capacity() * size_of::<Sample>();
        let mut name = |n: &Arc<str>| {
            if names.insert(n.as_ptr()) {
                n.len() + 2 * size_of::<usize>()
            } else {
                0
            }
        };
        for s in &self.samples {
            bytes += s.statements.len() * size_of::<StatementPoint>()
                + s.tables.len() * size_of::<TablePoint>()
                + s.imports.len() * size_of::<ImportPoint>();
            for st in s.statements.iter() {
                bytes += name(&st.datname) + st.query.as_ref().map_or(0, &mut name);
            }
            for t in s.tables.iter() {
                bytes += name(&t.table);
            }
            for i in s.imports.iter() {
                bytes += name(&i.import_id) + name(&i.datname);
            }
        }
        bytes
    }

    /// Take a sample of `observations` at `at` (Unix seconds).
    pub fn record(&mut self, observations: &Observations, poll_seconds: f64, at: u64) {
        let mut sample = sample(observations, poll_seconds, at, self.samples.back());
        if let Some(last) = self.samples.back_mut() {
            if last.at / self.step == at / self.step {
                sample.poll_seconds = sample.poll_seconds.max(last.poll_seconds);
                *last = sample;
                return;
            }
        }
        // Make room first, so the deque never grows past its capacity.
        let oldest = at.saturating_sub(WINDOW.as_secs());
        while self
            .samples
            .front()
            .is_some_and(|s| s.at < oldest || self.samples.len() >= self.capacity())
        {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }
}

/// Every source's ring. A std lock: held only to copy or append, never across an await.
#[derive(Debug, Default)]
pub struct History {
    rings: RwLock<BTreeMap<String, Ring>>,
}

impl History {
    /// Take a sample of `source` now; `step` is its poll interval.
    pub fn record(
        &self,
        source: &str,
        observations: &Observations,
        poll_seconds: f64,
        step: Duration,
    ) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut rings = self.rings.write().unwrap_or_else(|e| e.into_inner());
        let ring = rings
            .entry(source.to_owned())
            .or_insert_with(|| Ring::new(step));
        if ring.step != step.clamp(MIN_STEP, MAX_STEP).as_secs().max(1) {
            // The poll interval changed (a reload): start over at the new step.
            *ring = Ring::new(step);
        }
        ring.record(observations, poll_seconds, at);
    }

    /// A copy of one source's ring.
    pub fn ring(&self, source: &str) -> Option<Ring> {
        let rings = self.rings.read().unwrap_or_else(|e| e.into_inner());
        rings.get(source).cloned()
    }

    /// Copies of every ring, by source.
    pub fn rings(&self) -> BTreeMap<String, Ring> {
        self.rings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget a source that is no longer watched.
    pub fn forget(&self, source: &str) {
        let mut rings = self.rings.write().unwrap_or_else(|e| e.into_inner());
        rings.remove(source);
    }
}

/// The previous sample's copy of `name`, if it has one, else a new one.
fn shared<'a>(name: &str, previous: impl IntoIterator<Item = &'a Arc<str>>) -> Arc<str> {
    previous
        .into_iter()
        .find(|p| &***p == name)
        .cloned()
        .unwrap_or_else(|| Arc::from(name))
}

fn connections(observations: &Observations) -> Option<Connections> {
    let activity = observations.activity.as_ref()?;
    let mut c = Connections {
        usable: u32::try_from(
            activity
                .max_connections
                .saturating_sub(activity.reserved_connections),
        )
        .unwrap_or(0),
        ..Connections::default()
    };
    for (state, n) in &activity.by_state {
        let n = u32::try_from(*n).unwrap_or(u32::MAX);
        let slot = match state.as_str() {
            "active" => &mut c.active,
            "idle" => &mut c.idle,
            s if s.starts_with("idle in transaction") => &mut c.idle_in_transaction,
            _ => &mut c.other,
        };
        *slot = slot.saturating_add(n);
    }
    Some(c)
}

/// A sample of `observations`, sharing names with `previous`: a pure function of what the
/// collectors reported.
pub fn sample(
    observations: &Observations,
    poll_seconds: f64,
    at: u64,
    previous: Option<&Sample>,
) -> Sample {
    let writing_xacts = observations.activity.as_ref().map(|a| {
        let n = a
            .open_transactions
            .iter()
            .filter(|s| s.holds_writes)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    });
    Sample {
        at,
        up: observations.up,
        poll_seconds: poll_seconds as f32,
        connections: connections(observations),
        writing_xacts,
        statements: top_statements(observations),
        tables: watched_tables(observations, previous),
        imports: newest_imports(observations, previous),
    }
}

/// The statements with the most execution time in the interval.
fn top_statements(observations: &Observations) -> Box<[StatementPoint]> {
    let mut statements: Vec<_> = observations
        .statements
        .iter()
        .flat_map(|r| r.statements.iter())
        .collect();
    statements.sort_by(|a, b| (b.calls * b.mean_seconds).total_cmp(&(a.calls * a.mean_seconds)));
    statements
        .into_iter()
        .take(TOP_STATEMENTS)
        .map(|s| StatementPoint {
            queryid: s.queryid,
            datname: s.datname.clone(),
            query: s.query.clone(),
            mean_seconds: s.mean_seconds as f32,
            calls: s.calls as f32,
        })
        .collect()
}

/// Exactly counted tables first, then the largest by rows; in name order.
fn watched_tables(observations: &Observations, previous: Option<&Sample>) -> Box<[TablePoint]> {
    let mut tables: Vec<(bool, i64, String)> = observations
        .each_database()
        .filter_map(|(datname, d)| Some((datname, d.tables.as_ref()?)))
        .flat_map(|(datname, t)| {
            t.tables.iter().map(move |s| {
                let rows = s.exact_rows.unwrap_or(s.live_rows);
                (
                    s.exact_rows.is_some(),
                    rows,
                    format!("{datname}.{}", s.table),
                )
            })
        })
        .collect();
    tables.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)).then_with(|| a.2.cmp(&b.2)));
    tables.truncate(MAX_TABLES);
    // Stable order (by name) so each table keeps its colour from one sample to the next.
    tables.sort_by(|a, b| a.2.cmp(&b.2));
    let before = previous
        .iter()
        .flat_map(|p| p.tables.iter().map(|t| &t.table));
    tables
        .into_iter()
        .map(|(_, live_rows, name)| TablePoint {
            table: shared(&name, before.clone()),
            live_rows,
        })
        .collect()
}

/// The newest audit rows' verdicts.
fn newest_imports(observations: &Observations, previous: Option<&Sample>) -> Box<[ImportPoint]> {
    let mut imports: Vec<_> = observations
        .each_database()
        .filter_map(|(datname, d)| Some((datname, d.imports.as_ref()?)))
        .flat_map(|(datname, r)| r.imports.iter().map(move |v| (datname, v)))
        .collect();
    imports.sort_by(|a, b| {
        let age = |v: &crate::collect::imports::reconcile::ImportVerdict| {
            v.age_seconds.unwrap_or(f64::MAX)
        };
        age(a.1).total_cmp(&age(b.1))
    });
    let before = previous.iter().flat_map(|p| p.imports.iter());
    imports
        .into_iter()
        .take(MAX_IMPORTS)
        .map(|(datname, v)| ImportPoint {
            import_id: shared(&v.import_id, before.clone().map(|i| &i.import_id)),
            datname: shared(datname, before.clone().map(|i| &i.datname)),
            verdict: v.verdict,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::activity::{ActivityReport, Session};
    use crate::collect::imports::ImportsReport;
    use crate::collect::imports::reconcile::ImportVerdict;

    fn observations(verdict: Verdict) -> Observations {
        let mut by_state = BTreeMap::new();
        by_state.insert("active".to_owned(), 2);
        by_state.insert("idle".to_owned(), 5);
        by_state.insert("idle in transaction".to_owned(), 1);
        by_state.insert("idle in transaction (aborted)".to_owned(), 1);
        by_state.insert("fastpath function call".to_owned(), 1);
        let writer = Session {
            pid: 7,
            datname: "app".into(),
            usename: "u".into(),
            application_name: "importer".into(),
            state: "idle in transaction".into(),
            xact_age_seconds: 3.0,
            state_age_seconds: 3.0,
            holds_writes: true,
            query: "insert".into(),
        };
        let reader = Session {
            holds_writes: false,
            ..writer.clone()
        };
        let mut o = Observations {
            up: true,
            activity: Some(ActivityReport {
                max_connections: 100,
                reserved_connections: 3,
                client_connections: 10,
                open_transactions: vec![writer, reader],
                by_state,
            }),
            ..Observations::default()
        };
        let mut v = ImportVerdict::invalid("import_audit", "id-1", "committed", String::new());
        v.verdict = verdict;
        v.age_seconds = Some(5.0);
        o.database_mut("app").imports = Some(ImportsReport {
            datname: "app".into(),
            audit_tables: vec!["import_audit".into()],
            imports: vec![v],
            ..ImportsReport::default()
        });
        o
    }

    #[test]
    fn a_sample_counts_states_against_the_usable_limit() {
        let s = sample(&observations(Verdict::Ok), 0.25, 100, None);
        assert_eq!(
            s.connections,
            Some(Connections {
                active: 2,
                idle: 5,
                idle_in_transaction: 2,
                other: 1,
                usable: 97,
            })
        );
        assert_eq!(s.writing_xacts, Some(1));
        assert_eq!(&*s.imports[0].import_id, "id-1");
        assert_eq!(s.imports[0].verdict, Verdict::Ok);
        assert!(s.up);
        let down = sample(&Observations::default(), 1.0, 100, None);
        assert_eq!(
            (down.up, down.connections, down.writing_xacts),
            (false, None, None)
        );
    }

    #[test]
    fn names_are_shared_with_the_previous_sample() {
        let first = sample(&observations(Verdict::Confirming), 0.1, 100, None);
        let second = sample(&observations(Verdict::Shortfall), 0.1, 115, Some(&first));
        assert!(Arc::ptr_eq(
            &first.imports[0].import_id,
            &second.imports[0].import_id
        ));
        assert_eq!(second.imports[0].verdict, Verdict::Shortfall);
    }

    #[test]
    fn the_ring_keeps_one_sample_per_step_and_one_hour() {
        let mut ring = Ring::new(Duration::from_secs(15));
        let o = observations(Verdict::Ok);
        ring.record(&o, 0.5, 990);
        // Same step: replaced, keeping the slower poll.
        ring.record(&o, 0.1, 1_000);
        assert_eq!(ring.samples().len(), 1);
        let only = ring.samples().next().unwrap();
        assert_eq!((only.at, only.poll_seconds), (1_000, 0.5));
        for i in 1..=400 {
            ring.record(&o, 0.1, 1_000 + i * 15);
        }
        assert_eq!(ring.samples().len(), ring.capacity());
        assert_eq!(ring.capacity(), 241);
        let (first, last) = (
            ring.samples().next().unwrap().at,
            ring.samples().last().unwrap().at,
        );
        assert!(last - first <= WINDOW.as_secs(), "{first}..{last}");
        assert_eq!(last, 1_000 + 400 * 15);
        // The names are shared: a full ring of one import and no statement or table stays
        // small (the slots, one point per sample, two names once).
        let bytes = ring.heap_bytes();
        let slots = ring.capacity() * std::mem::size_of::<Sample>();
        assert!(bytes >= slots && bytes < slots * 2, "{bytes} vs {slots}");
    }

    #[test]
    fn steps_are_clamped() {
        assert_eq!(Ring::new(Duration::from_millis(100)).step_seconds(), 1);
        assert_eq!(Ring::new(Duration::from_secs(600)).step_seconds(), 60);
        assert_eq!(Ring::new(Duration::from_millis(100)).capacity(), 3_601);
    }
}
