//! What pgvigil reads from a DSN itself, before tokio-postgres parses the rest.
//!
//! tokio-postgres knows most of libpq's connection parameters, but not the TLS file ones
//! (`sslcert`, `sslkey`, `sslrootcert`), and its error for a bad value is a bare "invalid
//! connection string" that names neither the key nor the value. So a DSN is first split here,
//! in both of libpq's forms:
//!
//! * `key=value` pairs (values optionally in single quotes, `\` escaping the next character);
//! * URLs `postgres[ql]://[user[:password]@][host][:port][,...][/dbname][?key=value&...]`.
//!
//! The TLS file parameters are taken out (and become the same settings as the `tls_cert_file`,
//! `tls_key_file` and `tls_ca_file` keys); `sslmode` and `port` values are checked, so a mistake
//! is reported with the key, the value and the fix. Everything else is left, byte for byte, to
//! tokio-postgres. No error here quotes the DSN: it may hold a password.

/// The libpq TLS file parameters found in a DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DsnTlsFiles {
    /// `sslcert`: the client certificate (PEM).
    pub(crate) cert: Option<String>,
    /// `sslkey`: its private key (PEM).
    pub(crate) key: Option<String>,
    /// `sslrootcert`: CA certificates to verify the server with (PEM).
    pub(crate) root_cert: Option<String>,
}

/// The sslmodes tokio-postgres implements.
const SSLMODES: &[&str] = &["disable", "prefer", "require"];

/// Split `dsn` into what tokio-postgres parses and the TLS file parameters, checking the values
/// pgvigil can explain better than tokio-postgres.
pub(crate) fn split(dsn: &str) -> Result<(String, DsnTlsFiles), String> {
    let trimmed = dsn.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_pairs(dsn)
    }
}

/// Check one parameter pgvigil understands better than tokio-postgres; `Ok(true)` when it is a
/// TLS file parameter (taken out of the DSN).
fn take(key: &str, value: &str, files: &mut DsnTlsFiles) -> Result<bool, String> {
    let slot = match key {
        "sslcert" => &mut files.cert,
        "sslkey" => &mut files.key,
        "sslrootcert" => &mut files.root_cert,
        "sslmode" => {
            check_sslmode(value)?;
            return Ok(false);
        }
        "port" => {
            for port in value.split(',') {
                check_port(port)?;
            }
            return Ok(false);
        }
        _ => return Ok(false),
    };
    if value.is_empty() {
        return Err(format!(
            "{key} is empty in the DSN; name a PEM file, or leave {key} out"
        ));
    }
    *slot = Some(value.to_owned());
    Ok(true)
}

fn check_sslmode(value: &str) -> Result<(), String> {
    match value {
        v if SSLMODES.contains(&v) => Ok(()),
        // The verifying modes get their own hint in `ConnectionSpec::parse`.
        "verify-ca" | "verify-full" => Ok(()),
        "allow" => Err(
            "sslmode=allow is not supported (it tries plaintext first); use sslmode=prefer (TLS when the server offers it, the default) or sslmode=disable".to_owned(),
        ),
        other => Err(format!(
            "sslmode \"{other}\" is not an sslmode; use disable, prefer (the default) or require, and tls_verify = \"full\" or \"ca\" to check the server's certificate"
        )),
    }
}

fn check_port(port: &str) -> Result<(), String> {
    if port.is_empty() {
        return Ok(());
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(format!(
            "port \"{port}\" is not a TCP port; use a number from 1 to 65535 (PostgreSQL listens on 5432 and PgBouncer on 6432 by default)"
        )),
    }
}

/// The `key=value` form.
fn split_pairs(dsn: &str) -> Result<(String, DsnTlsFiles), String> {
    let mut files = DsnTlsFiles::default();
    let mut kept = String::with_capacity(dsn.len());
    let mut rest = dsn;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let start = dsn.len() - rest.len();
        let (key, value, after) = match pair(rest) {
            Some(parsed) => parsed,
            // Let tokio-postgres report the syntax error in its own words.
            None => return Ok((dsn.to_owned(), files)),
        };
        let end = dsn.len() - after.len();
        if !take(key, &value, &mut files)? {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&dsn[start..end]);
        }
        rest = after;
    }
    Ok((kept, files))
}

/// One `key = value` at the start of `s`: the key, the unquoted value, and what follows.
fn pair(s: &str) -> Option<(&str, String, &str)> {
    let key_end = s.find(|c: char| c == '=' || c.is_whitespace())?;
    let key = &s[..key_end];
    let rest = s[key_end..].trim_start().strip_prefix('=')?.trim_start();
    let mut value = String::new();
    let mut chars = rest.char_indices();
    let quoted = rest.starts_with('\'');
    if quoted {
        chars.next();
    }
    let mut end = rest.len();
    let mut closed = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' if quoted => {
                end = i + 1;
                closed = true;
                break;
            }
            c if !quoted && c.is_whitespace() => {
                end = i;
                break;
            }
            c => value.push(c),
        }
    }
    if quoted && !closed {
        return None;
    }
    (!key.is_empty()).then(|| (key, value, &rest[end..]))
}

/// The URL form.
fn split_url(url: &str) -> Result<(String, DsnTlsFiles), String> {
    let mut files = DsnTlsFiles::default();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    for host in hosts.split(',') {
        let port = match host.strip_prefix('[') {
            Some(v6) => v6.split_once("]:").map(|(_, p)| p),
            None => host.rsplit_once(':').map(|(_, p)| p),
        };
        if let Some(port) = port {
            check_port(&percent_decode(port))?;
        }
    }
    let Some(query) = query else {
        return Ok((url.to_owned(), files));
    };
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if !take(&percent_decode(key), &percent_decode(value), &mut files)? {
            kept.push(param);
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Ok((out, files))
}

/// `%XX` decoding as libpq does it for URL parts (invalid escapes are kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_are_taken_out_of_key_value_dsns() {
        let (rest, files) =
            split("host=db sslcert=/c/client.crt sslkey = '/c/my key.pem' user=u").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(files.cert.as_deref(), Some("/c/client.crt"));
        assert_eq!(files.key.as_deref(), Some("/c/my key.pem"));
        assert_eq!(files.root_cert, None);
        // Escapes and quotes of the other values are passed on as written.
        let (rest, files) = split(r"password='it\'s' sslrootcert=/ca.pem dbname=x").unwrap();
        assert_eq!(rest, r"password='it\'s' dbname=x");
        assert_eq!(files.root_cert.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn tls_files_are_taken_out_of_urls() {
        let (rest, files) = split(
            "postgres://u:p@db:5433/app?sslmode=require&sslcert=%2Fc%2Fclient.crt&sslkey=/c/k.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db:5433/app?sslmode=require&application_name=x"
        );
        assert_eq!(files.cert.as_deref(), Some("/c/client.crt"));
        assert_eq!(files.key.as_deref(), Some("/c/k.pem"));
        let (rest, _) = split("postgresql://db/app?sslkey=/k").unwrap();
        assert_eq!(rest, "postgresql://db/app");
    }

    #[test]
    fn bad_sslmodes_and_ports_name_the_value_and_the_fix() {
        let err = split("host=h sslmode=bogus").unwrap_err();
        assert!(
            err.starts_with("sslmode \"bogus\" is not an sslmode"),
            "{err}"
        );
        assert!(
            err.contains("disable, prefer (the default) or require"),
            "{err}"
        );
        let err = split("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(err.starts_with("sslmode=allow is not supported"), "{err}");
        for dsn in [
            "host=h port=99999",
            "host=h port=5432,99999",
            "postgres://h:99999/db",
            "postgres://u:secret@a:5432,b:99999/db",
            "postgres://[::1]:99999/db",
        ] {
            let err = split(dsn).unwrap_err();
            assert!(
                err.starts_with("port \"99999\" is not a TCP port"),
                "{dsn}: {err}"
            );
            assert!(!err.contains("secret"), "{err}");
        }
        assert!(split("postgres://[::1]:5432/db").is_ok());
        assert!(split("postgres://u:p%40ss@h/db").is_ok());
    }

    #[test]
    fn syntax_errors_are_left_to_tokio_postgres() {
        let (rest, _) = split("host='unterminated").unwrap();
        assert_eq!(rest, "host='unterminated");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("a%2fb%zz"), "a/b%zz");
    }
}
