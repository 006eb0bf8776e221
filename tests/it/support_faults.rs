//! Faults made to order: a listener that accepts TCP connections and never answers, and counts
//! how many of them are open at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A local address that accepts every TCP connection and then says nothing, ever (what a
/// hung server, a black-holing proxy or a half-dead load balancer looks like to a client).
/// Connections are held open until the client closes them or the listener is dropped.
pub struct StallingListener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    lives: Arc<Mutex<Vec<Life>>>,
    task: JoinHandle<()>,
}

/// One connection's life as the listener saw it: accepted, and closed by the client (its FIN
/// read), if it has been.
#[derive(Clone, Copy, Debug)]
struct Life {
    accepted: Instant,
    closed: Option<Instant>,
}

/// The most connections open at once, counted at the middle of each closed connection's life.
///
/// Counting at an accept would race with a FIN the client sent just before connecting again
/// (a loaded kernel may deliver it after the new connection is accepted), and could only be
/// fixed with a guessed grace period. The middle of a life is half a connect_timeout away
/// from both of its ends, so a connection that really overlapped it is counted and one that
/// merely closed late by a scheduling delay is not.
fn peak_at_midpoints(lives: &[Life]) -> usize {
    lives
        .iter()
        .filter_map(|life| {
            let closed = life.closed?;
            let mid = life.accepted + (closed - life.accepted) / 2;
            Some(
                lives
                    .iter()
                    .filter(|other| other.accepted <= mid && other.closed.is_none_or(|c| c >= mid))
                    .count(),
            )
        })
        .max()
        .unwrap_or(0)
}

/// Reads and throws away what the client sends until it closes the connection.
async fn until_closed(stream: TcpStream) {
    let mut buf = [0u8; 512];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

impl StallingListener {
    pub async fn start() -> StallingListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let lives = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (accepted.clone(), lives.clone());
        let task = tokio::spawn(async move {
            // Dropped (and with it every held connection) when this task is aborted.
            let mut held = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut lives = log.lock().unwrap();
                    lives.push(Life {
                        accepted: Instant::now(),
                        closed: None,
                    });
                    lives.len() - 1
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                held.spawn(async move {
                    until_closed(stream).await;
                    log.lock().unwrap()[index].closed = Some(Instant::now());
                });
                while held.try_join_next().is_some() {}
            }
        });
        StallingListener {
            addr,
            accepted,
            lives,
            task,
        }
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once (see [`peak_at_midpoints`]; a connection
    /// counts once the client has closed it).
    pub fn peak_open(&self) -> usize {
        peak_at_midpoints(&self.lives.lock().unwrap())
    }

    /// A DSN for it.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=pgvigil dbname=postgres",
            self.addr.port()
        )
    }
}

impl Drop for StallingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn life(base: Instant, from_ms: u64, to_ms: Option<u64>) -> Life {
        Life {
            accepted: base + Duration::from_millis(from_ms),
            closed: to_ms.map(|t| base + Duration::from_millis(t)),
        }
    }

    #[test]
    fn a_late_fin_is_not_an_overlap_but_a_real_one_is() {
        let t = Instant::now();
        // Two at a time, each 1 s, the second pair accepted 20 ms before the first pair's
        // FINs were read.
        let in_line = [
            life(t, 0, Some(1000)),
            life(t, 5, Some(1005)),
            life(t, 980, Some(1980)),
            life(t, 985, Some(1985)),
        ];
        assert_eq!(peak_at_midpoints(&in_line), 2);
        // A third connection open alongside for most of the second's life.
        let mut over = in_line.to_vec();
        over.push(life(t, 300, None));
        assert_eq!(peak_at_midpoints(&over), 3);
        // Nothing closed yet: nothing counted.
        assert_eq!(peak_at_midpoints(&[life(t, 0, None)]), 0);
    }
}
