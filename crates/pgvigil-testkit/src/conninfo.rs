//! A small parser and printer for the libpq connection strings `PGVIGIL_TEST_DSN` may hold.
//!
//! Supported: `key=value` strings (values bare or single-quoted, with backslash escapes) and
//! `postgres://` / `postgresql://` URLs (`user:password@host:port/dbname?key=value&...`,
//! percent-encoded, IPv6 hosts in brackets). `host`, `port`, `user`, `password` and `dbname` are
//! understood; every other keyword (`sslmode`, `options`, ...) is passed through unchanged.
//! Not supported: several hosts (`host=a,b`), `service=` lookups, and `PG*` environment defaults
//! for the fields above.

use std::fmt::Write as _;

/// Where and as whom to connect; the database is chosen per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    /// Host name, IP address, or (starting with `/`) a Unix socket directory.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    /// The database named in the parsed string, if any.
    pub(crate) dbname: Option<String>,
    /// Other keywords, in order.
    pub(crate) options: Vec<(String, String)>,
}

/// Used when the string names no host.
const DEFAULT_HOST: &str = "localhost";
/// Used when the string names no port.
const DEFAULT_PORT: u16 = 5432;

impl ConnInfo {
    /// A `ConnInfo` for `host:port` as `user`, without password or options.
    pub(crate) fn new(host: &str, port: u16, user: &str) -> ConnInfo {
        ConnInfo {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: None,
            dbname: None,
            options: Vec::new(),
        }
    }

    /// Parses a `key=value` string or a URL; `default_user` fills in a missing `user`.
    pub(crate) fn parse(s: &str, default_user: &str) -> Result<ConnInfo, String> {
        let s = s.trim();
        let pairs = if let Some(rest) = s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            parse_url(rest)?
        } else {
            parse_keyword_value(s)?
        };
        let mut info = ConnInfo::new(DEFAULT_HOST, DEFAULT_PORT, default_user);
        for (key, value) in pairs {
            match key.as_str() {
                "host" if value.contains(',') => {
                    return Err(format!("several hosts are not supported: host={value}"));
                }
                "host" if !value.is_empty() => info.host = value,
                "host" => {}
                "port" => {
                    info.port = value
                        .parse()
                        .map_err(|_| format!("invalid port {value:?}"))?;
                }
                "user" if !value.is_empty() => info.user = value,
                "user" => {}
                "password" => info.password = Some(value),
                "dbname" if !value.is_empty() => info.dbname = Some(value),
                "dbname" => {}
                "service" => return Err("service= is not supported".to_owned()),
                _ => info.options.push((key, value)),
            }
        }
        Ok(info)
    }

    /// `key=value` form for database `dbname`, e.g.
    /// `host=127.0.0.1 port=54021 user=postgres dbname=postgres`.
    pub(crate) fn to_dsn(&self, dbname: &str) -> String {
        let mut out = String::new();
        let mut push = |key: &str, value: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{key}={}", quote_value(value));
        };
        push("host", &self.host);
        push("port", &self.port.to_string());
        push("user", &self.user);
        if let Some(password) = &self.password {
            push("password", password);
        }
        push("dbname", dbname);
        for (key, value) in &self.options {
            push(key, value);
        }
        out
    }

    /// `postgres://` URL form for database `dbname`, e.g.
    /// `postgres://postgres@127.0.0.1:54021/postgres`. A Unix socket directory goes in the query
    /// string with the port (`postgres://u@/db?host=%2Frun%2Fpostgresql&port=5432`).
    pub(crate) fn to_url(&self, dbname: &str) -> String {
        let mut out = String::from("postgres://");
        out.push_str(&percent_encode(&self.user));
        if let Some(password) = &self.password {
            out.push(':');
            out.push_str(&percent_encode(password));
        }
        out.push('@');
        let port = self.port.to_string();
        let mut query = Vec::new();
        if self.host.starts_with('/') {
            // An empty authority host with the socket directory and port as parameters: the
            // form both libpq and tokio-postgres accept.
            query.push(("host", self.host.as_str()));
            query.push(("port", port.as_str()));
        } else if self.host.contains(':') {
            let _ = write!(out, "[{}]:{port}", self.host);
        } else {
            let _ = write!(out, "{}:{port}", percent_encode(&self.host));
        }
        let _ = write!(out, "/{}", percent_encode(dbname));
        query.extend(self.options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (i, (key, value)) in query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            let _ = write!(out, "{}={}", percent_encode(key), percent_encode(value));
        }
        out
    }
}

/// Splits `key = value key2='quoted \' value'` into pairs.
fn parse_keyword_value(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing `=` after {key:?} in connection string"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().unwrap_or('\\')),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().unwrap_or('\\'));
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Splits the part of a URL after the scheme into keyword/value pairs, in libpq's precedence
/// order (query parameters last, so they win).
fn parse_url(rest: &str) -> Result<Vec<(String, String)>, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut pairs = Vec::new();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            pairs.push(("user".to_owned(), percent_decode(user)?));
            if let Some(password) = password {
                pairs.push(("password".to_owned(), percent_decode(password)?));
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unterminated `[` in URL host {hostport:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    pairs.push(("host".to_owned(), percent_decode(host)?));
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        pairs.push(("port".to_owned(), port.to_owned()));
    }
    pairs.push(("dbname".to_owned(), percent_decode(path)?));
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| format!("URL parameter {param:?} has no `=`"))?;
        pairs.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok(pairs)
}

/// Quotes a `key=value` value if it needs it (empty, whitespace, quotes or backslashes).
fn quote_value(value: &str) -> String {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if !needs_quotes {
        return value.to_owned();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("percent-encoding in {s:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ConnInfo {
        ConnInfo::parse(s, "tester").unwrap()
    }

    #[test]
    fn keyword_value() {
        let info = parse("host=db.example port=6543 user=alice dbname=app sslmode=disable");
        assert_eq!(info.host, "db.example");
        assert_eq!(info.port, 6543);
        assert_eq!(info.user, "alice");
        assert_eq!(info.dbname.as_deref(), Some("app"));
        assert_eq!(info.options, [("sslmode".to_owned(), "disable".to_owned())]);
    }

    #[test]
    fn keyword_value_quoting_and_spaces() {
        let info = parse(r"  host = /run/postgresql password='it\'s a \\secret' options='-c a=b' ");
        assert_eq!(info.host, "/run/postgresql");
        assert_eq!(info.password.as_deref(), Some(r"it's a \secret"));
        assert_eq!(info.options, [("options".to_owned(), "-c a=b".to_owned())]);
    }

    #[test]
    fn defaults() {
        let info = parse("");
        assert_eq!(info, ConnInfo::new("localhost", 5432, "tester"));
        assert_eq!(parse("dbname=x").user, "tester");
    }

    #[test]
    fn keyword_value_errors() {
        assert!(ConnInfo::parse("host", "u").is_err());
        assert!(ConnInfo::parse("password='open", "u").is_err());
        assert!(ConnInfo::parse("port=fivefourthreetwo", "u").is_err());
        assert!(ConnInfo::parse("host=a,b", "u").is_err());
        assert!(ConnInfo::parse("service=x", "u").is_err());
    }

    #[test]
    fn url() {
        let info = parse("postgresql://bob:p%40ss@10.0.0.5:5433/metrics?sslmode=require");
        assert_eq!(info.host, "10.0.0.5");
        assert_eq!(info.port, 5433);
        assert_eq!(info.user, "bob");
        assert_eq!(info.password.as_deref(), Some("p@ss"));
        assert_eq!(info.dbname.as_deref(), Some("metrics"));
        assert_eq!(info.options, [("sslmode".to_owned(), "require".to_owned())]);
    }

    #[test]
    fn url_variants() {
        assert_eq!(
            parse("postgres://"),
            ConnInfo::new("localhost", 5432, "tester")
        );
        let v6 = parse("postgres://u@[::1]:6000/d");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 6000));
        let socket = parse("postgres:///d?host=%2Frun%2Fpostgresql&port=5444");
        assert_eq!(
            (socket.host.as_str(), socket.port),
            ("/run/postgresql", 5444)
        );
        assert!(ConnInfo::parse("postgres://h:1/d?x", "u").is_err());
        assert!(ConnInfo::parse("postgres://h/%zz", "u").is_err());
    }

    #[test]
    fn dsn_output() {
        let info = ConnInfo::new("127.0.0.1", 54021, "postgres");
        assert_eq!(
            info.to_dsn("postgres"),
            "host=127.0.0.1 port=54021 user=postgres dbname=postgres"
        );
        let mut info = info;
        info.password = Some("a b'c".to_owned());
        info.options
            .push(("sslmode".to_owned(), "disable".to_owned()));
        assert_eq!(
            info.to_dsn("db"),
            r"host=127.0.0.1 port=54021 user=postgres password='a b\'c' dbname=db sslmode=disable"
        );
    }

    #[test]
    fn url_output() {
        let info = ConnInfo::new("127.0.0.1", 54021, "postgres");
        assert_eq!(
            info.to_url("postgres"),
            "postgres://postgres@127.0.0.1:54021/postgres"
        );
        let mut info = ConnInfo::new("/run/postgresql", 5432, "a@b");
        info.password = Some("p:w".to_owned());
        info.options
            .push(("sslmode".to_owned(), "disable".to_owned()));
        assert_eq!(
            info.to_url("my db"),
            "postgres://a%40b:p%3Aw@/my%20db?host=%2Frun%2Fpostgresql&port=5432&sslmode=disable"
        );
        assert_eq!(
            ConnInfo::new("::1", 5, "u").to_url("d"),
            "postgres://u@[::1]:5/d"
        );
    }

    #[test]
    fn round_trips() {
        let mut info = ConnInfo::new("/tmp/sock dir", 5999, "o'neil");
        info.password = Some(r"back\slash".to_owned());
        info.options
            .push(("options".to_owned(), "-c x=1".to_owned()));
        info.dbname = Some("d b".to_owned());
        assert_eq!(parse(&info.to_dsn("d b")), info);
        assert_eq!(parse(&info.to_url("d b")), info);
    }
}
