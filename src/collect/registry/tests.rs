//! Every collector is held to what its registry entry declares.

use std::collections::HashSet;

use super::*;
use crate::config::{ConnectionSpec, LibpqEnv, PgbouncerConfig};
use crate::metrics::{self, ALL};

fn target() -> TargetConfig {
    TargetConfig::new(
        "t",
        ConnectionSpec::parse("host=h", &LibpqEnv::default()).unwrap(),
    )
}

fn bouncer() -> PgbouncerConfig {
    PgbouncerConfig::new(
        "b",
        ConnectionSpec::parse_admin("host=h", &LibpqEnv::default()).unwrap(),
    )
}

/// What the tests need of every collector, whatever its kind.
type Info = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static MetricDef],
    &'static [&'static str],
);

/// (kind's config key, name, table, metrics, grants) of every collector.
fn infos() -> Vec<Info> {
    POSTGRES
        .iter()
        .map(|s| ("targets", s.name, s.table, s.metrics, s.grants))
        .chain(
            PGBOUNCER
                .iter()
                .map(|s| ("pgbouncers", s.name, s.table, s.metrics, s.grants)),
        )
        .collect()
}

#[test]
fn names_are_unique_and_are_the_collectors_own() {
    let mut seen = HashSet::new();
    for (_, name, _, _, _) in infos() {
        assert!(seen.insert(name), "{name} is registered twice");
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{name}: collector names are snake_case"
        );
    }
    let target = target();
    for spec in POSTGRES {
        assert_eq!((spec.build)(&target).name(), spec.name);
    }
    let bouncer = bouncer();
    for spec in PGBOUNCER {
        assert_eq!((spec.build)(&bouncer).name(), spec.name);
    }
}

#[test]
fn every_declared_metric_is_in_the_catalogue_and_every_source_metric_is_declared() {
    let mut declared = HashSet::new();
    for (_, name, _, metrics, _) in infos() {
        assert!(!metrics.is_empty(), "{name} declares no metric");
        for def in metrics {
            assert!(
                metrics::find(def.name).is_some(),
                "{name} declares {}, which is in no catalogue file (src/metrics/)",
                def.name
            );
            assert!(
                !metrics::is_process_metric(def),
                "{name} declares the process metric {}",
                def.name
            );
            declared.insert(def.name);
        }
    }
    for def in ALL.iter() {
        if !metrics::is_process_metric(def) {
            assert!(
                declared.contains(def.name),
                "{} is in the catalogue but no collector declares it: declare it in the registry entry of the collector that publishes it, or remove it",
                def.name
            );
        }
    }
}

#[test]
fn every_grant_is_in_the_monitoring_role_script() {
    let sql = include_str!("../../../deploy/sql/monitoring_role.sql");
    let readme = include_str!("../../../README.md");
    for (kind, name, _, _, grants) in infos() {
        for grant in grants {
            // PgBouncer grants are PgBouncer settings, documented in the README.
            let (text, file) = match kind {
                "targets" => (sql, "deploy/sql/monitoring_role.sql"),
                _ => (readme, "README.md"),
            };
            assert!(
                text.contains(grant),
                "{name} needs `{grant}`, which {file} does not mention"
            );
        }
    }
}

#[test]
fn example_config_shows_every_collector_table_with_its_keys() {
    let text = include_str!("../../../config/pgvigil.example.toml");
    let example: toml::Table = text.parse().expect("the example config is TOML");
    let target = target();
    let bouncer = bouncer();
    for (kind, name, table, _, _) in infos() {
        let entry = example[kind]
            .as_array()
            .and_then(|a| a.first())
            .and_then(toml::Value::as_table)
            .unwrap_or_else(|| panic!("the example config has no [[{kind}]]"));
        let shown = entry
            .get(table)
            .and_then(toml::Value::as_table)
            .unwrap_or_else(|| panic!("the example config has no [{kind}.{table}] for {name}"));
        let enabled_by_default = match kind {
            "targets" => (find::<Postgres>(name).unwrap().section)(&target).enabled(),
            _ => (find::<Pgbouncer>(name).unwrap().section)(&bouncer).enabled(),
        };
        assert_eq!(
            shown.get("enabled").and_then(toml::Value::as_bool),
            Some(enabled_by_default),
            "[{kind}.{table}] must show enabled = {enabled_by_default} (its default)"
        );
        for key in crate::config::accepted_keys(kind, table) {
            // `interval` defaults to the source's poll_interval and sub-tables to none, so
            // they are shown commented out.
            let commented = text.contains(&format!("# {key} = "))
                || text.contains(&format!("# [[{kind}.{table}.{key}]]"));
            if !commented {
                assert!(
                    shown.contains_key(&key),
                    "[{kind}.{table}] in the example config lacks `{key}`"
                );
            }
        }
    }
}

#[test]
fn versions_describe_and_bound() {
    assert!(PG13.supports(130000) && PG13.supports(180001) && !PG13.supports(120000));
    assert_eq!(PG13.describe(), "13+");
    let range = Versions {
        min: Some(140000),
        below: Some(170000),
    };
    assert!(range.supports(160004) && !range.supports(170000));
    assert_eq!(range.describe(), "14 to 16");
    assert_eq!(Versions::ANY.describe(), "any");
}

#[test]
fn readme_collectors_reference_is_current() {
    crate::readme::assert_generated_block(
        "collectors-reference",
        &reference_markdown(),
        "src/collect/registry.rs",
    );
}
