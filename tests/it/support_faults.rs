//! Faults made to order: a listener that accepts TCP connections and never answers, and counts
//! how many of them are open at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A local address that accepts every TCP connection and then says nothing, ever (what a
/// hung server, a black-holing proxy or a half-dead load balancer looks like to a client).
/// Connections are held open until the listener is dropped.
pub struct StallingListener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    peak_open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// How long a closing client's FIN is given to arrive before a new peak of open connections
/// is counted.
const FIN_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the client has closed `stream` (what it sent is read and thrown away).
fn closed_by_client(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

impl StallingListener {
    pub async fn start() -> StallingListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let peak_open = Arc::new(AtomicUsize::new(0));
        let (count, peak) = (accepted.clone(), peak_open.clone());
        let task = tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.retain(|s| !closed_by_client(s));
                held.push(stream);
                if held.len() > peak.load(Ordering::SeqCst) {
                    // A new peak: first give a FIN the client sent before this connection time
                    // to be delivered (a loaded kernel may defer it), then count again. Not a
                    // wait for the test's signal: a connection the client really keeps open
                    // stays open for its whole connect_timeout, far longer than this.
                    tokio::time::sleep(FIN_GRACE).await;
                    held.retain(|s| !closed_by_client(s));
                    peak.fetch_max(held.len(), Ordering::SeqCst);
                }
            }
        });
        StallingListener {
            addr,
            accepted,
            peak_open,
            task,
        }
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once (counted at each accept).
    pub fn peak_open(&self) -> usize {
        self.peak_open.load(Ordering::SeqCst)
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
