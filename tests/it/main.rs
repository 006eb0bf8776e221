//! pgvigil's integration tests: one binary, against real PostgreSQL clusters started by
//! `pgvigil-testkit` (or the server named by `PGVIGIL_TEST_DSN`). No mocks of Postgres.

// Test helpers are shared across modules of this one binary; `pub(crate)` everywhere would
// add noise without protecting anything.
#![allow(unreachable_pub)]

mod activity;
mod advice;
mod alerting;
mod alerts_e2e;
mod bench_smoke;
mod cli;
mod client_certs;
mod connect_storm;
mod dashboards;
mod databases;
mod deploy;
mod discovery;
mod endpoints;
mod faults;
mod faults_audit;
mod https_receivers;
mod imports;
mod indexes;
mod lifecycle;
mod lock_queue;
mod lock_safety;
mod locks;
mod methods;
mod migrations;
mod operator_kit;
mod package;
mod pgbouncer;
mod pgbouncer_privileges;
mod pgbouncer_tls;
mod prepared;
mod privileges;
mod registry;
mod reload;
mod replication;
mod sequences;
mod server_health;
mod sessions;
mod statements;
mod status_page;
mod support;
mod support_alerting;
mod support_browser;
mod support_certs;
mod support_faults;
mod support_package;
mod support_prometheus;
mod support_tools;
mod switching;
mod tables;
mod tls;
mod versions;
mod web;
