//! Basic authentication against `basic_auth_users`, response headers, and the rate limit.
//!
//! bcrypt is slow on purpose (about 50 ms of CPU at cost 10): verifying every scrape would cost
//! Prometheus's 15 s interval a noticeable share of a core. As exporter-toolkit does, a
//! successful verification is cached, keyed by a SHA-256 of the user, the hash and the
//! password (the password itself is never kept), so the next request with the same
//! credentials costs a hash lookup. The cache holds at most [`CACHE_CAPACITY`] entries and is
//! dropped with the config when the file changes. Failures are not cached (a flood of wrong
//! passwords cannot grow memory); verifications run one at a time on the blocking pool, so a
//! flood costs at most one core and never stalls the async workers. An unknown user is
//! checked against a fixed hash, so timing does not tell which user names exist.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};

use super::config::{RateLimit, WebConfig};

/// Most cached successful verifications.
pub const CACHE_CAPACITY: usize = 256;

/// bcrypt of "fakepassword" at cost 10: what an unknown user's password is checked against.
const DECOY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// Check the form of a bcrypt hash; the error never quotes it (it is a secret).
pub(crate) fn check_hash(hash: &str) -> Result<(), String> {
    match hash.parse::<bcrypt::HashParts>() {
        Ok(parts) if (4..=31).contains(&parts.get_cost()) => Ok(()),
        Ok(parts) => Err(format!(
            "the bcrypt cost {} of a basic_auth_users entry is out of range; hash the password again with a cost from 4 to 31 (e.g. `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            parts.get_cost()
        )),
        Err(_) => Err(
            "the password of a basic_auth_users entry must be a bcrypt hash ($2y$10$...), not the password itself; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`".to_owned(),
        ),
    }
}

/// What a request is refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// 401 with `WWW-Authenticate: Basic`.
    Unauthorized,
    /// 429: over `rate_limit`.
    TooManyRequests,
}

/// The authentication and decoration state of one loaded web config.
#[derive(Debug)]
pub(crate) struct Gate {
    users: std::collections::BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt at a time.
    bcrypt: Arc<tokio::sync::Semaphore>,
    limiter: Option<Mutex<Bucket>>,
}

impl Gate {
    pub(crate) fn new(config: &WebConfig) -> Gate {
        Gate {
            users: config.users.clone(),
            headers: config
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
            verified: Mutex::new(HashSet::new()),
            bcrypt: Arc::new(tokio::sync::Semaphore::new(1)),
            limiter: config.rate_limit.map(|r| Mutex::new(Bucket::new(r))),
        }
    }

    /// Whether any user is configured (authentication is on).
    pub(crate) fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// The headers every response carries.
    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Take a token from the rate limiter (always `Ok` without one).
    pub(crate) fn admit(&self, now: Instant) -> Result<(), Denied> {
        match &self.limiter {
            Some(bucket) => {
                let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
                if bucket.take(now) {
                    Ok(())
                } else {
                    Err(Denied::TooManyRequests)
                }
            }
            None => Ok(()),
        }
    }

    /// Check a request's `Authorization` header against `basic_auth_users`.
    pub(crate) async fn authenticate(&self, headers: &hyper::HeaderMap) -> Result<(), Denied> {
        if self.users.is_empty() {
            return Ok(());
        }
        let (user, password) =
            parse_basic(headers.get(AUTHORIZATION)).ok_or(Denied::Unauthorized)?;
        let known = self.users.get(&user);
        let hash = known.map_or(DECOY_HASH, String::as_str).to_owned();
        let key = cache_key(&user, &hash, &password);
        if known.is_some() && self.cached(&key) {
            return Ok(());
        }
        let ok = self.verify(password, hash).await && known.is_some();
        if !ok {
            return Err(Denied::Unauthorized);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(key);
        Ok(())
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// bcrypt on the blocking pool, one at a time.
    async fn verify(&self, password: String, hash: String) -> bool {
        let Ok(_permit) = self.bcrypt.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }
}

/// `Basic base64(user:password)`.
fn parse_basic(value: Option<&HeaderValue>) -> Option<(String, String)> {
    let value = value?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut key = [0; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// A token bucket: `burst` tokens, one more every `interval`.
#[derive(Debug)]
pub(crate) struct Bucket {
    interval: Duration,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit) -> Bucket {
        Bucket {
            interval: limit.interval,
            burst: limit.burst,
            tokens: f64::from(limit.burst),
            last: None,
        }
    }

    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill =
                now.saturating_duration_since(last).as_secs_f64() / self.interval.as_secs_f64();
            self.tokens = (self.tokens + refill).min(f64::from(self.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(users: &[(&str, &str)]) -> Gate {
        let mut config = WebConfig::parse(std::path::Path::new("w.yml"), "").unwrap();
        config.users = users
            .iter()
            .map(|(u, h)| ((*u).to_owned(), (*h).to_owned()))
            .collect();
        Gate::new(&config)
    }

    fn basic(user: &str, password: &str) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(AUTHORIZATION, format!("Basic {token}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn good_credentials_pass_and_are_cached_bad_ones_are_not() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let g = gate(&[("prometheus", &hash)]);
        assert!(g.requires_auth());
        assert_eq!(g.authenticate(&basic("prometheus", "s3cret")).await, Ok(()));
        assert_eq!(g.verified.lock().unwrap().len(), 1);
        assert_eq!(g.authenticate(&basic("prometheus", "s3cret")).await, Ok(()));
        assert_eq!(
            g.verified.lock().unwrap().len(),
            1,
            "the second one was a cache hit"
        );
        for (user, password) in [
            ("prometheus", "wrong"),
            ("nobody", "fakepassword"),
            ("", ""),
        ] {
            assert_eq!(
                g.authenticate(&basic(user, password)).await,
                Err(Denied::Unauthorized),
                "{user}:{password}"
            );
        }
        assert_eq!(
            g.verified.lock().unwrap().len(),
            1,
            "failures are not cached"
        );
        assert_eq!(
            g.authenticate(&hyper::HeaderMap::new()).await,
            Err(Denied::Unauthorized)
        );
        let mut bearer = hyper::HeaderMap::new();
        bearer.insert(AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(g.authenticate(&bearer).await, Err(Denied::Unauthorized));
        // Without users, everything passes.
        assert_eq!(
            gate(&[]).authenticate(&hyper::HeaderMap::new()).await,
            Ok(())
        );
    }

    #[test]
    fn hashes_are_checked_for_form_without_being_echoed() {
        assert!(check_hash(DECOY_HASH).is_ok());
        let err = check_hash("plaintext").unwrap_err();
        assert!(!err.contains("plaintext"), "{err}");
        let err =
            check_hash("$2y$99$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi").unwrap_err();
        assert!(err.contains("cost 99"), "{err}");
    }

    #[test]
    fn the_bucket_allows_bursts_and_refills() {
        let mut b = Bucket::new(RateLimit {
            interval: Duration::from_secs(1),
            burst: 2,
        });
        let t0 = Instant::now();
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_secs(1)));
        assert!(!b.take(t0 + Duration::from_secs(1)));
    }
}
