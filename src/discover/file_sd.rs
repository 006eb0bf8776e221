//! Prometheus' `file_sd` format, read as pgvigil targets. Pure: text in, targets out.
//!
//! A file is a list of groups, JSON (`*.json`) or YAML (`*.yml`, `*.yaml`), exactly as
//! Prometheus reads it:
//!
//! ```json
//! [{"targets": ["db1:5432", "db2:5432"], "labels": {"__pgvigil_dbname": "app", "team": "crm"}}]
//! ```
//!
//! Each `host:port` (port 5432 when left out) is a target. The DSN pieces pgvigil needs besides
//! host and port come from the group's meta labels — labels starting with `__`, which Prometheus
//! drops after relabelling, so the same file can feed both: `__pgvigil_name` (the `target`
//! label; only in a group of one target; default `host-port`), `__pgvigil_dbname`,
//! `__pgvigil_user`, `__pgvigil_password_file`, `__pgvigil_sslmode`. Everything else comes from
//! `[discovery.defaults]`. Other labels are accepted and not used: pgvigil is one scrape target
//! for all its sources, so Prometheus attaches its own target labels to every series, and
//! series are joined on `target`. Unknown `__pgvigil_*` labels are errors (a typo would
//! otherwise connect with the defaults silently).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::{DiscoveryConfig, DsnPieces, LibpqEnv, TargetConfig};

const META: &str = "__pgvigil_";
const KNOWN_META: [&str; 5] = ["name", "dbname", "user", "password_file", "sslmode"];

/// One group of a file_sd file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parse a file_sd file into pgvigil targets, or say what is wrong and where
/// (`FILE:LINE:COL: ...` for syntax, `FILE: group N: ...` for content).
pub(crate) fn parse(
    path: &Path,
    text: &str,
    discovery: &DiscoveryConfig,
    env: &LibpqEnv,
) -> Result<Vec<TargetConfig>, String> {
    let groups = groups(path, text)?;
    let mut targets = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let at = |message: String| format!("{}: group {}: {message}", path.display(), i + 1);
        let meta = meta(&group.labels).map_err(at)?;
        if meta.contains_key("name") && group.targets.len() != 1 {
            return Err(at(format!(
                "{META}name names one target, but the group lists {}; give each target a group of its own",
                group.targets.len()
            )));
        }
        for address in &group.targets {
            let (host, port) = host_port(address).map_err(at)?;
            let name = meta
                .get("name")
                .cloned()
                .unwrap_or_else(|| format!("{host}-{port}"));
            check_name(&name).map_err(at)?;
            let pieces = DsnPieces {
                dbname: meta.get("dbname").cloned(),
                user: meta.get("user").cloned(),
                sslmode: meta.get("sslmode").cloned(),
            };
            let password_file = meta.get("password_file").map(String::as_str);
            let target = discovery
                .target(&name, &host, port, &pieces, password_file, env)
                .map_err(|e| at(format!("{address}: {e}")))?;
            targets.push(target);
        }
    }
    Ok(targets)
}

fn groups(path: &Path, text: &str) -> Result<Vec<Group>, String> {
    let yaml = path.extension().is_some_and(|e| e == "yml" || e == "yaml");
    if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
            None => format!("{}: {e}", path.display()),
        })
    } else {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "{}:{}:{}: {e}; a file_sd file is a JSON list of {{\"targets\": [\"host:port\"], \"labels\": {{...}}}}",
                path.display(),
                e.line(),
                e.column()
            )
        })
    }
}

/// The group's `__pgvigil_*` labels, without the prefix.
fn meta(labels: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (key, value) in labels {
        let Some(piece) = key.strip_prefix(META) else {
            continue;
        };
        if !KNOWN_META.contains(&piece) {
            return Err(format!(
                "unknown label {key}; pgvigil reads {}",
                KNOWN_META.map(|k| format!("{META}{k}")).join(", ")
            ));
        }
        out.insert(piece.to_owned(), value.clone());
    }
    Ok(out)
}

fn host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = match address.rsplit_once(':') {
        // An IPv6 address in brackets, or a host with a port.
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            let port = port.parse().map_err(|_| {
                format!("\"{address}\": the port is not a number; write \"host:port\"")
            })?;
            (host.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (address.trim_start_matches('[').trim_end_matches(']'), 5432),
    };
    if host.is_empty() {
        return Err(format!("\"{address}\" has no host; write \"host:port\""));
    }
    Ok((host.to_owned(), port))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "invalid target name \"{name}\"; use letters, digits, '_', '-' or '.' ({META}name)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> DiscoveryConfig {
        let text = "[discovery]\nfiles = [\"/x/*.json\"]\n[discovery.defaults]\ndsn = \"user=pgvigil dbname=postgres\"\npoll_interval = \"2s\"\n";
        crate::config::Config::parse(Path::new("p.toml"), text, &LibpqEnv::default())
            .unwrap()
            .discovery
            .unwrap()
    }

    fn parse_json(text: &str) -> Result<Vec<TargetConfig>, String> {
        parse(
            Path::new("t.json"),
            text,
            &discovery(),
            &LibpqEnv::default(),
        )
    }

    #[test]
    fn groups_become_targets_with_the_defaults_and_meta_labels() {
        let targets = parse_json(
            r#"[{"targets": ["db1:5433", "db2"], "labels": {"team": "crm", "__pgvigil_dbname": "app"}},
                {"targets": ["10.0.0.9:6000"], "labels": {"__pgvigil_name": "billing", "__pgvigil_user": "mon"}}]"#,
        )
        .unwrap();
        let shown: Vec<(String, String)> = targets
            .iter()
            .map(|t| (t.name.clone(), t.connection.describe()))
            .collect();
        assert_eq!(
            shown,
            [
                ("db1-5433".to_owned(), "pgvigil@db1:5433/app".to_owned()),
                ("db2-5432".to_owned(), "pgvigil@db2:5432/app".to_owned()),
                (
                    "billing".to_owned(),
                    "mon@10.0.0.9:6000/postgres".to_owned()
                ),
            ]
        );
        assert_eq!(targets[0].poll_interval, std::time::Duration::from_secs(2));
    }

    #[test]
    fn yaml_is_read_too() {
        let targets = parse(
            Path::new("t.yml"),
            "- targets: [\"db:5432\"]\n  labels:\n    __pgvigil_name: main\n",
            &discovery(),
            &LibpqEnv::default(),
        )
        .unwrap();
        assert_eq!(targets[0].name, "main");
    }

    #[test]
    fn mistakes_say_where() {
        let err = parse_json("[{\"targets\": [\"db:5432\"],\n \"lables\": {}}]").unwrap_err();
        assert!(err.starts_with("t.json:2:"), "{err}");
        let err = parse_json(r#"[{"targets": ["a", "b"], "labels": {"__pgvigil_name": "x"}}]"#)
            .unwrap_err();
        assert!(
            err.starts_with("t.json: group 1: __pgvigil_name names one target"),
            "{err}"
        );
        let err =
            parse_json(r#"[{"targets": ["a"], "labels": {"__pgvigil_dbnmae": "x"}}]"#).unwrap_err();
        assert!(err.contains("unknown label __pgvigil_dbnmae"), "{err}");
        let err = parse_json(r#"[{"targets": ["a:x"]}]"#).unwrap_err();
        assert!(err.contains("the port is not a number"), "{err}");
        let err = parse(
            Path::new("t.yaml"),
            "- targets: [a\n",
            &discovery(),
            &LibpqEnv::default(),
        )
        .unwrap_err();
        assert!(err.starts_with("t.yaml:"), "{err}");
    }
}
