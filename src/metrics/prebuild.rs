//! Building each published snapshot's gzip pieces right after it is published, off the
//! scrape path, while gzip is being scraped.
//!
//! # Why
//!
//! Pieces (module `parts`) used to be built by the first gzip scrape that saw a snapshot. With
//! many targets every scrape finds nearly every snapshot new (each target polls every
//! interval), so each scrape built them all: at 500 targets, 1.2 M series, three quarters of
//! a 0.73 s scrape went into `Parts::build` (encoding and compressing the blocks that
//! changed). The work is the same wherever it is done — once per published snapshot — so it
//! is done as soon as the snapshot exists, and a scrape only splices.
//!
//! # How
//!
//! * The first gzip scrape starts one thread, `pgvigil-pieces`, with one compressor; until
//!   then nothing is built eagerly (a daemon no one scrapes with gzip, or scraped only as
//!   plain text, pays nothing).
//! * From then on a publish queues the new snapshot (a weak reference and its target's name)
//!   to that thread if a gzip scrape spliced the snapshot it replaces, or it replaces none
//!   (module `store`). So when Prometheus scrapes less often than a collector publishes (a
//!   60 s scrape of 15 s polls), or stops scraping, only about one snapshot per scrape is
//!   built, as before, not every one: the others would be compressed for no reader.
//! * The thread builds the queued snapshots' pieces in order. A snapshot replaced before its
//!   turn has been freed, or handed its seed on to its successor, and is skipped.
//! * A scrape that comes first builds the pieces itself or waits for the thread to finish
//!   them (they are a `OnceLock`), so a body never lacks a snapshot and nothing is built
//!   twice.
//! * The queue is unbounded but holds one small entry per publish; the thread works through
//!   it faster than polls fill it (building costs about a tenth of a poll's CPU).

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::gzip::Deflater;
use super::store::Published;

/// One snapshot to build pieces for.
type Job = (String, Weak<Published>);

/// The eager builder of one store: started at the first gzip scrape.
#[derive(Debug, Default)]
pub(super) struct Prebuild {
    queue: OnceLock<Mutex<Sender<Job>>>,
}

impl Prebuild {
    /// A gzip scrape is being served: start the builder if it is not running.
    pub(super) fn gzip_scraped(&self) {
        self.queue.get_or_init(|| Mutex::new(start()));
    }

    /// Queue `published` (just published under `target`) once the builder runs.
    pub(super) fn published(&self, target: &str, published: &Arc<Published>) {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let job = (target.to_owned(), Arc::downgrade(published));
        // The thread only stops when the store (and so this sender) is dropped.
        let _ = queue.lock().unwrap_or_else(|e| e.into_inner()).send(job);
    }

    /// Whether the builder thread runs (for tests).
    #[cfg(test)]
    pub(super) fn started(&self) -> bool {
        self.queue.get().is_some()
    }
}

/// Start the builder thread; it ends when the returned sender is dropped.
fn start() -> Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("pgvigil-pieces".into())
        .spawn(move || {
            let mut deflater = Deflater::default();
            for (target, published) in rx {
                if let Some(published) = published.upgrade() {
                    published.parts(&target, &mut deflater);
                }
            }
        });
    if let Err(e) = spawned {
        // Scrapes build the pieces themselves, as before; only the latency is lost.
        tracing::warn!(error = %e, "could not start the gzip pieces thread; scrapes build them");
    }
    tx
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pgvigil_testkit::wait_until;

    use super::super::scrape::tests::{gunzip, statements};
    use crate::metrics::{Encoding, Format, Metrics};

    #[test]
    fn once_gzip_is_scraped_pieces_are_built_as_snapshots_are_published_if_scrapes_keep_up() {
        let metrics = Metrics::new();
        let store = metrics.store();
        store.publish("a", "statements", statements(3000, 0));

        // Plain and zstd scrapes start nothing: no one asked for gzip.
        metrics
            .scrape(Format::Classic, Encoding::Identity)
            .into_bytes();
        metrics.scrape(Format::Classic, Encoding::Zstd).into_bytes();
        assert!(!store.prebuild().started());
        let lazily_built = store.all();
        assert!(!lazily_built[0].1.has_parts());

        metrics.scrape(Format::Classic, Encoding::Gzip).into_bytes();
        assert!(store.prebuild().started());
        assert!(
            lazily_built[0].1.has_parts(),
            "the scrape built what it served"
        );

        // The next publish is built with no scrape asking for it.
        store.publish("a", "statements", statements(3000, 1500));
        store.publish("b", "statements", statements(10, 0));
        let published = store.all();
        wait_until(
            "pieces built after publish",
            Duration::from_secs(60),
            || published.iter().all(|(_, p)| p.has_parts()).then_some(()),
        );
        let plain = metrics
            .scrape(Format::Classic, Encoding::Identity)
            .into_bytes();
        let gz = metrics.scrape(Format::Classic, Encoding::Gzip).into_bytes();
        assert_eq!(gunzip(&gz).as_bytes(), &plain[..]);
        assert!(
            gunzip(&gz).contains(
                "{target=\"a\",datname=\"app\",usename=\"u\",queryid=\"1500\",toplevel=\"true\"} 1501.0\n"
            ),
            "the eagerly built pieces hold the new value"
        );

        // Two publishes of "a" between scrapes: the second replaces a snapshot no scrape
        // served, so it is left to the next scrape. "b"'s next one, queued after it, is built;
        // the queue is worked in order, so "a"'s would have been built first.
        store.publish("a", "statements", statements(3000, 7));
        store.publish("a", "statements", statements(3000, 8));
        store.publish("b", "statements", statements(10, 1));
        let published = store.all();
        let (a, b) = (&published[0].1, &published[1].1);
        wait_until("b's pieces built", Duration::from_secs(60), || {
            b.has_parts().then_some(())
        });
        assert!(
            !a.has_parts(),
            "a snapshot after an unserved one waits for a scrape"
        );
        let plain = metrics
            .scrape(Format::Classic, Encoding::Identity)
            .into_bytes();
        let gz = metrics.scrape(Format::Classic, Encoding::Gzip).into_bytes();
        assert_eq!(gunzip(&gz).as_bytes(), &plain[..]);
        assert!(a.has_parts());
    }
}
