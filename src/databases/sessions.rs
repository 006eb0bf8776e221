//! The database sessions of one target: at most `max_connections - 1` open at once, each
//! connected to one database, kept open after use and closed least recently used first —
//! sessions on databases with an audit table last, since import checks come back to them every
//! few seconds and their `LISTEN pgvigil_import` only hears that database's writers.

use tokio::time::Instant;

use crate::target::Session;

struct Open {
    datname: String,
    session: Session,
    used: Instant,
}

/// The open database sessions, least recently used first.
pub(crate) struct Sessions {
    capacity: usize,
    open: Vec<Open>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("capacity", &self.capacity)
            .field("open", &self.names())
            .finish()
    }
}

impl Sessions {
    /// Room for `capacity` sessions (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Sessions {
            capacity: capacity.max(1),
            open: Vec::new(),
        }
    }

    /// Forget sessions whose connection is gone.
    pub(crate) fn prune(&mut self) {
        self.open.retain(|o| !o.session.client.is_closed());
    }

    /// Whether a session on `datname` is open.
    pub(crate) fn has(&self, datname: &str) -> bool {
        self.open
            .iter()
            .any(|o| o.datname == datname && !o.session.client.is_closed())
    }

    /// The session on `datname`, marked used at `now`.
    pub(crate) fn get(&mut self, datname: &str, now: Instant) -> Option<&Session> {
        let open = self
            .open
            .iter_mut()
            .find(|o| o.datname == datname && !o.session.client.is_closed())?;
        open.used = now;
        Some(&open.session)
    }

    /// Every open session.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Session> {
        self.open
            .iter()
            .filter(|o| !o.session.client.is_closed())
            .map(|o| &o.session)
    }

    /// Any open session (to read the cluster-wide catalogs).
    pub(crate) fn any(&self) -> Option<&Session> {
        self.open
            .iter()
            .rev()
            .find(|o| !o.session.client.is_closed())
            .map(|o| &o.session)
    }

    /// Make room for one more session: close the least recently used one if all are taken,
    /// preferring one whose database `is_parked` says nothing (no audit table) about. Returns
    /// the backend pid of the session closed.
    pub(crate) fn make_room(&mut self, is_parked: impl Fn(&str) -> bool) -> Option<i32> {
        self.prune();
        if self.open.len() < self.capacity {
            return None;
        }
        let victim = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, o)| !is_parked(&o.datname))
            .min_by_key(|(_, o)| o.used)
            .or_else(|| self.open.iter().enumerate().min_by_key(|(_, o)| o.used))
            .map(|(i, _)| i);
        // Dropping the client closes the connection.
        victim.map(|i| self.open.remove(i).session.server.backend_pid)
    }

    /// Keep a new session on `datname` (after [`Sessions::make_room`]).
    pub(crate) fn insert(&mut self, datname: &str, session: Session, now: Instant) {
        self.open.retain(|o| o.datname != datname);
        self.open.push(Open {
            datname: datname.to_owned(),
            session,
            used: now,
        });
    }

    /// Close the session on `datname`, if one is open (its state is unknown, or the database
    /// is no longer watched).
    pub(crate) fn close(&mut self, datname: &str) {
        self.open.retain(|o| o.datname != datname);
    }

    /// Close every session.
    pub(crate) fn close_all(&mut self) {
        self.open.clear();
    }

    /// How many are open.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// The databases with an open session.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.open.iter().map(|o| o.datname.as_str()).collect()
    }

    /// Their backend pids.
    pub(crate) fn pids(&self) -> Vec<i32> {
        self.open
            .iter()
            .map(|o| o.session.server.backend_pid)
            .collect()
    }
}
