//! A configuration from one file or from a directory of `*.toml` fragments.
//!
//! Fragments are read in file-name order (config management tools drop one file per
//! database: `10-app.toml`, `20-billing.toml`) and merged: their `[[targets]]` and
//! `[[pgbouncers]]` are concatenated, and each of the other top-level tables (`[server]`,
//! `[logging]`, `[telemetry]`, `[alerts]`, `[discovery]`) may be written in one fragment only —
//! a second one is an error naming both places, rather than a silent override. Each fragment is
//! validated with its own file name, so every error still says `FILE:LINE:COL`; a name used by
//! two sources is rejected with both locations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::raw::RawConfig;
use super::source::Location;
use super::{Config, ConfigError, LibpqEnv, ServerConfig, Validator};

/// The top-level tables only one fragment may set.
const SINGLE: [&str; 5] = ["server", "logging", "telemetry", "alerts", "discovery"];

/// The `*.toml` files of a directory, in name order.
pub(super) fn fragment_paths(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ConfigError::Environment(format!(
            "{}: the config directory holds no *.toml fragment; add one (e.g. 00-main.toml) or point --config at a file",
            dir.display()
        )));
    }
    Ok(paths)
}

/// Read and validate a directory of fragments.
pub(super) fn load_dir(dir: &Path, env: &LibpqEnv) -> Result<Config, ConfigError> {
    let mut texts = Vec::new();
    for path in fragment_paths(dir)? {
        let text = super::read_text(&path)?;
        texts.push((path, text));
    }
    let parts: Vec<(&Path, &str)> = texts
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    assemble(&parts, env)
}

/// Validate the fragments `(path, text)`, in order, into one configuration.
pub(super) fn assemble(fragments: &[(&Path, &str)], env: &LibpqEnv) -> Result<Config, ConfigError> {
    let mut parts = Vec::with_capacity(fragments.len());
    for (path, text) in fragments {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        let validator = Validator { path, text, env };
        let present = top_level_tables(path, text);
        parts.push((validator, raw, present));
    }
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, (_, _, present)) in parts.iter().enumerate() {
        for (key, at) in present {
            let Some(section) = SINGLE.iter().find(|s| *s == key) else {
                continue;
            };
            if let Some(first) = owner.get(section) {
                let first_at = &parts[*first].2[section.to_owned()];
                return Err(ConfigError::located(
                    at,
                    format!(
                        "[{section}] is already set in {first_at}; write each of [server], [logging], [telemetry], [alerts] and [discovery] in one fragment only"
                    ),
                ));
            }
            owner.insert(section, i);
        }
    }
    let own = |section: &str| owner.get(section).copied().unwrap_or(0);
    let (server, logging, telemetry, alerts, discovery) = {
        let take = |i: usize| &parts[i];
        let (v, raw, _) = take(own("server"));
        let server = v.server(&raw.server)?;
        let (v, raw, _) = take(own("logging"));
        let logging = v.logging(&raw.logging)?;
        let (v, raw, _) = take(own("telemetry"));
        let telemetry = v.telemetry(&raw.telemetry)?;
        (server, logging, telemetry, own("alerts"), own("discovery"))
    };
    let mut names = HashMap::new();
    let mut config = Config {
        server,
        logging,
        telemetry,
        targets: Vec::new(),
        pgbouncers: Vec::new(),
        alerts: Default::default(),
        discovery: None,
    };
    for (i, (v, raw, _)) in parts.into_iter().enumerate() {
        config.targets.extend(v.targets(raw.targets, &mut names)?);
        config
            .pgbouncers
            .extend(v.pgbouncers(raw.pgbouncers, &mut names)?);
        if i == alerts {
            config.alerts = v.alerts(raw.alerts)?;
        }
        if i == discovery && !raw.discovery.files.is_empty() {
            config.discovery = Some(v.discovery(raw.discovery)?);
        }
        if i == fragments.len() - 1
            && config.targets.is_empty()
            && config.pgbouncers.is_empty()
            && config.discovery.is_none()
        {
            return Err(ConfigError::at(
                v.path,
                v.text,
                None,
                "no [[targets]] or [[pgbouncers]] defined; add a target with a name and a dsn (see config/pgvigil.example.toml), or run pgvigil without --config to watch the database named by DATABASE_URL / PGHOST",
            ));
        }
    }
    Ok(config)
}

/// The top-level keys of a fragment and where each is first written.
fn top_level_tables(path: &Path, text: &str) -> HashMap<String, Location> {
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return HashMap::new();
    };
    table
        .get_ref()
        .iter()
        .map(|(key, _)| {
            (
                key.get_ref().to_string(),
                Location::of(path, text, key.span().start),
            )
        })
        .collect()
}

impl Validator<'_> {
    pub(super) fn server(&self, raw: &super::raw::RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = match &raw.listen {
            None => super::DEFAULT_LISTEN.parse().expect("valid default"),
            Some(listen) => listen.get_ref().parse().map_err(|_| {
                self.err(
                    listen,
                    format!(
                        "invalid listen address \"{}\"; write host:port, e.g. \"0.0.0.0:9961\" or \"127.0.0.1:9961\"",
                        listen.get_ref()
                    ),
                )
            })?,
        };
        let max_concurrent_connects = match &raw.max_concurrent_connects {
            None => ServerConfig::DEFAULT_MAX_CONCURRENT_CONNECTS,
            Some(value) => {
                let max = ServerConfig::MAX_MAX_CONCURRENT_CONNECTS;
                usize::try_from(*value.get_ref())
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        self.err(
                            value,
                            format!(
                                "max_concurrent_connects = {} is out of range; use 1 to {max} (default {}): it bounds how many connection attempts run at once, the rest wait in line",
                                value.get_ref(),
                                ServerConfig::DEFAULT_MAX_CONCURRENT_CONNECTS
                            ),
                        )
                    })?
            }
        };
        Ok(ServerConfig {
            listen,
            web: self.web(&raw.web_config_file, &raw.auth_exempt_paths)?,
            enable_lifecycle: raw.enable_lifecycle.unwrap_or(false),
            max_concurrent_connects,
        })
    }
}
