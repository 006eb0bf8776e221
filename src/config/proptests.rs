//! Property tests of the config loader: whatever the text, `Config::parse` returns a config or
//! an error located in the file (`FILE:LINE:COL` with a line of the file), never a panic.

use std::path::Path;

use proptest::prelude::*;

use super::{Config, ConfigError, LibpqEnv};

const SECTIONS: &[&str] = &[
    "[server]",
    "[logging]",
    "[telemetry]",
    "[[targets]]",
    "[targets.tables]",
    "[targets.imports]",
    "[[targets.imports.audit_tables]]",
    "[targets.statements]",
    "[targets.activity]",
    "[targets.alerts.ConnectionsNearLimit]",
    "[[pgbouncers]]",
    "[alerts]",
    "[alerts.log]",
    "[[alerts.alertmanager]]",
    "[[alerts.webhook]]",
    "[alerts.rules.IdleInTransaction]",
    "[alerts.rules.Nope]",
];

const KEYS: &[&str] = &[
    "name",
    "dsn",
    "dsn_env",
    "password_file",
    "tls_ca_file",
    "tls_verify",
    "tls_cert_file",
    "tls_key_file",
    "poll_interval",
    "connect_timeout",
    "statement_timeout",
    "lock_timeout",
    "reconnect_max_backoff",
    "listen",
    "web_config_file",
    "auth_exempt_paths",
    "level",
    "format",
    "otlp_enabled",
    "include",
    "exclude",
    "max_tables",
    "exact_count_tables",
    "exact_count_timeout",
    "exact_count_interval",
    "grace_period",
    "max_imports",
    "table",
    "top_k",
    "query_text_length",
    "url",
    "urls",
    "timeout",
    "tls_config",
    "state_dir",
    "resend_interval",
    "for",
    "severity",
    "enabled",
    "warning_ratio",
    "max_idle",
    "columns",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"main\"".to_owned()),
        Just("\"host=h port=5432\"".to_owned()),
        Just("\"postgres://u:p@h:99999/db\"".to_owned()),
        Just("\"host=h sslmode=bogus sslcert=/x\"".to_owned()),
        Just("\"30d\"".to_owned()),
        Just("\"1ms\"".to_owned()),
        Just("\"400years\"".to_owned()),
        Just("\"18446744073709551615s\"".to_owned()),
        Just("\"2147483647ms\"".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("-1".to_owned()),
        Just("1e308".to_owned()),
        Just("nan".to_owned()),
        Just("true".to_owned()),
        Just("[\"/healthz\", \"/nope\"]".to_owned()),
        Just("{ ca_file = \"/nonexistent\" }".to_owned()),
        Just("\"https://h/x\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"/etc/hostname\"".to_owned()),
        Just("\"public.t\"".to_owned()),
        "\"[^\"\\\\\n]{0,16}\"",
        "-?[0-9]{1,25}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(SECTIONS).prop_map(str::to_owned),
        6 => (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => ("[a-z_]{1,10}", value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => ".{0,20}",
    ]
}

/// Every error of `parse` names a position inside the text.
fn check(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(Path::new("fuzz.toml"), text, &LibpqEnv::default()) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid {
            line,
            column,
            message,
            ..
        }) => {
            let lines = text.split('\n').count().max(1);
            prop_assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {message}"
            );
            prop_assert!(column >= 1, "{message}");
            prop_assert!(!message.is_empty());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "an error without a position: {other}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn generated_configs_parse_or_fail_at_a_position(lines in proptest::collection::vec(line(), 0..25)) {
        check(&lines.join("\n"))?;
    }

    #[test]
    fn arbitrary_text_parses_or_fails_at_a_position(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn the_example_config_with_one_edit_parses_or_fails_at_a_position(
        at in any::<proptest::sample::Index>(),
        cut in 0usize..40,
        insert in prop_oneof![Just(String::new()), value(), ".{0,5}"],
    ) {
        let example = include_str!("../../config/pgvigil.example.toml");
        let mut i = at.index(example.len());
        while !example.is_char_boundary(i) {
            i -= 1;
        }
        let mut end = (i + cut).min(example.len());
        while !example.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{insert}{}", &example[..i], &example[end..]);
        check(&text)?;
    }
}
