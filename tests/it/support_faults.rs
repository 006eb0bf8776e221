//! Faults made to order: a listener that accepts TCP connections and never answers.

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
    task: JoinHandle<()>,
}

impl StallingListener {
    pub async fn start() -> StallingListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        StallingListener {
            addr,
            accepted,
            task,
        }
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
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
