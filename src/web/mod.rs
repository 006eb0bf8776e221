//! HTTPS and authentication for pgvigil's endpoints, from a Prometheus exporter-toolkit
//! `web-config.yml` (`--web.config.file` or `[server] web_config_file`).
//!
//! What happens, step by step:
//!
//! 1. At start the file is loaded ([`WebConfig::load`]: YAML, certificates, key) into an
//!    `Active` config: a rustls acceptor when `tls_server_config` is set, and a `Gate`
//!    (basic-auth users, the verified-credentials cache, headers, rate limit). A file that
//!    cannot be loaded at start (it was checked when the config was loaded, so it changed in
//!    between) fails closed: every connection is refused until it is fixed.
//! 2. Each accepted connection takes the current `Active` (`Web::current`). That first
//!    `stat`s the web config file and every PEM file it names (a few syscalls, no reads); when
//!    one changed, the file is loaded again and, if it is valid, replaces the active config
//!    (certificates are re-read on change, as exporter-toolkit re-reads them per connection).
//!    An invalid edit is logged once and the previous config stays in force: a typo must not
//!    turn TLS off or lock Prometheus out.
//! 3. With TLS, the handshake must finish within [`HANDSHAKE_TIMEOUT`]; then
//!    `client_allowed_sans` is checked against the client's certificate.
//! 4. Each request passes the `Gate` before routing: the rate limit (429), then basic
//!    authentication (401 with `WWW-Authenticate`) unless the path is in
//!    `[server] auth_exempt_paths` (default `/healthz`). Every response gets the configured
//!    headers.
//!
//! Locks: one mutex around the active config, held for the `stat`s and the swap only (a reload
//! is done outside it); the credentials cache has its own.

mod auth;
pub mod client;
mod config;
mod tls;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

pub use auth::CACHE_CAPACITY;
pub use config::{
    ClientAuth, Curve, Pem, RateLimit, TlsServerSettings, TlsVersion, WebConfig, WebConfigError,
};

use crate::config::WebSettings;
pub(crate) use auth::{Denied, Gate};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One loaded web config, as connections use it.
pub(crate) struct Active {
    acceptor: Option<TlsAcceptor>,
    allowed_sans: Option<Vec<String>>,
    gate: Gate,
    exempt: Vec<String>,
    /// The config could not be loaded at start: refuse every connection.
    refuse: bool,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("tls", &self.acceptor.is_some())
            .field("allowed_sans", &self.allowed_sans)
            .field("gate", &self.gate)
            .field("exempt", &self.exempt)
            .field("refuse", &self.refuse)
            .finish()
    }
}

/// The identity of a file version: modification time, length, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[derive(Debug)]
struct State {
    active: Arc<Active>,
    /// The files watched and their stamps when `active` was loaded.
    stamps: Vec<(PathBuf, Stamp)>,
    /// The last reload error, logged once.
    failed: Option<String>,
}

/// The web config of the running server, reloaded when its files change.
#[derive(Debug)]
pub(crate) struct Web {
    settings: WebSettings,
    state: Option<Mutex<State>>,
}

impl Active {
    fn plain(exempt: Vec<String>) -> Active {
        let empty =
            WebConfig::parse(std::path::Path::new(""), "").expect("an empty config is valid");
        Active {
            acceptor: None,
            allowed_sans: None,
            gate: Gate::new(&empty),
            exempt,
            refuse: false,
        }
    }

    fn load(config: &WebConfig, exempt: Vec<String>) -> Result<Active, String> {
        let acceptor = match &config.tls {
            Some(settings) => Some(TlsAcceptor::from(Arc::new(
                tls::server_config(settings).map_err(|e| e.message)?,
            ))),
            None => None,
        };
        Ok(Active {
            acceptor,
            allowed_sans: config
                .tls
                .as_ref()
                .and_then(|t| t.client_allowed_sans.clone()),
            gate: Gate::new(config),
            exempt,
            refuse: false,
        })
    }

    /// Whether connections are served over TLS.
    pub(crate) fn tls(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Finish accepting a connection: the TLS handshake and the SAN check, if configured.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<Io> {
        if self.refuse {
            debug!(%peer, "refusing a connection: the web config file could not be loaded");
            return None;
        }
        let Some(acceptor) = &self.acceptor else {
            return Some(Io::Plain(stream));
        };
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        if let Some(allowed) = &self.allowed_sans {
            if !tls::sans_allowed(tls.get_ref().1.peer_certificates(), allowed) {
                warn!(%peer, "client certificate names none of client_allowed_sans; closing the connection");
                return None;
            }
        }
        Some(Io::Tls(Box::new(tls)))
    }

    /// The response that refuses `req`, if it must be refused (rate limit, authentication).
    pub(crate) async fn refusal<B>(&self, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let denied = match self.gate.admit(Instant::now()) {
            Err(d) => Some(d),
            Ok(()) if !self.gate.requires_auth() => None,
            Ok(()) if self.exempt.iter().any(|p| p == req.uri().path()) => None,
            Ok(()) => self.gate.authenticate(req.headers()).await.err(),
        };
        let mut response = match denied? {
            Denied::Unauthorized => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"Unauthorized\n")));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pgvigil\", charset=\"UTF-8\""),
                );
                r
            }
            Denied::TooManyRequests => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"Too Many Requests\n")));
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                r
            }
        };
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Some(self.decorate(response))
    }

    /// Add the configured headers to a response.
    pub(crate) fn decorate<B>(&self, mut response: Response<B>) -> Response<B> {
        for (name, value) in self.gate.headers() {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }
}

impl Web {
    /// Load the configured file (plain HTTP without one).
    pub(crate) fn new(settings: &WebSettings) -> Web {
        let Some(path) = &settings.config_file else {
            return Web {
                settings: settings.clone(),
                state: None,
            };
        };
        let exempt = settings.auth_exempt_paths.clone();
        let (active, stamps) = match WebConfig::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| Ok((Active::load(&c, exempt.clone())?, c.watched_files())))
        {
            Ok((active, files)) => {
                info!(
                    file = %path.display(),
                    tls = active.tls(),
                    basic_auth = active.gate.requires_auth(),
                    "web config loaded"
                );
                (
                    active,
                    files
                        .into_iter()
                        .map(|f| {
                            let s = stamp(&f);
                            (f, s)
                        })
                        .collect(),
                )
            }
            Err(e) => {
                error!("{e}; refusing HTTP connections until the web config file is fixed");
                let mut refusing = Active::plain(exempt);
                refusing.refuse = true;
                (refusing, vec![(path.clone(), None)])
            }
        };
        Web {
            settings: settings.clone(),
            state: Some(Mutex::new(State {
                active: Arc::new(active),
                stamps,
                failed: None,
            })),
        }
    }

    /// The config for a new connection, reloaded first if a watched file changed.
    pub(crate) fn current(&self) -> Arc<Active> {
        let Some(state) = &self.state else {
            return Arc::new(Active::plain(self.settings.auth_exempt_paths.clone()));
        };
        let (active, changed) = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            let changed = state.stamps.iter().any(|(f, s)| stamp(f) != *s);
            (state.active.clone(), changed)
        };
        if !changed {
            return active;
        }
        self.reload(state).unwrap_or(active)
    }

    fn reload(&self, state: &Mutex<State>) -> Option<Arc<Active>> {
        let path = self.settings.config_file.as_ref()?;
        // Stamps first: a file changed again while loading is loaded again next time.
        let loaded = WebConfig::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let stamps: Vec<_> = c
                    .watched_files()
                    .into_iter()
                    .map(|f| {
                        let s = stamp(&f);
                        (f, s)
                    })
                    .collect();
                Ok((
                    Active::load(&c, self.settings.auth_exempt_paths.clone())?,
                    stamps,
                ))
            });
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok((active, stamps)) => {
                info!(file = %path.display(), tls = active.tls(), basic_auth = active.gate.requires_auth(), "web config reloaded");
                state.active = Arc::new(active);
                state.stamps = stamps;
                state.failed = None;
                Some(state.active.clone())
            }
            Err(e) => {
                if state.failed.as_deref() != Some(e.as_str()) {
                    warn!("web config not reloaded, the previous one stays in force: {e}");
                    state.failed = Some(e);
                }
                // Try again when the files change again.
                state.stamps = self.watched_now(&state.stamps).into_iter().collect();
                None
            }
        }
    }

    /// The current stamps of the files watched so far.
    fn watched_now(&self, previous: &[(PathBuf, Stamp)]) -> Vec<(PathBuf, Stamp)> {
        previous
            .iter()
            .map(|(f, _)| (f.clone(), stamp(f)))
            .collect()
    }
}

/// An accepted connection: plain TCP or TLS over it.
#[derive(Debug)]
pub(crate) enum Io {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}
