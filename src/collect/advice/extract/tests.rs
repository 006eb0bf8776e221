use proptest::prelude::*;

use super::*;

fn t(name: &str) -> TableName {
    match name.split_once('.') {
        Some((schema, name)) => TableName {
            schema: Some(schema.into()),
            name: name.into(),
        },
        None => TableName {
            schema: None,
            name: name.into(),
        },
    }
}

/// `(table, column, usage)` of every use attributed to exactly one table.
fn uses(sql: &str) -> Vec<(String, String, Usage)> {
    analyse(sql)
        .unwrap()
        .columns
        .into_iter()
        .filter(|c| c.tables.len() == 1)
        .map(|c| (c.tables[0].quoted(), c.column, c.usage))
        .collect()
}

fn u(table: &str, column: &str, usage: Usage) -> (String, String, Usage) {
    (table.into(), column.into(), usage)
}

#[test]
fn where_with_placeholders() {
    assert_eq!(
        uses("SELECT id, name FROM contacts WHERE email = $1 AND created_at > $2"),
        [
            u("contacts", "email", Usage::Equality),
            u("contacts", "created_at", Usage::Range)
        ]
    );
    assert_eq!(
        uses(
            "select 1 from contacts where id in ($1, $2, $3) or owner = any($4) or n between $5 and $6 or name like $7"
        ),
        [
            u("contacts", "id", Usage::In),
            u("contacts", "owner", Usage::In),
            u("contacts", "n", Usage::Range)
        ]
    );
}

#[test]
fn like_with_a_leading_wildcard_is_not_a_prefix() {
    assert!(uses("SELECT 1 FROM c WHERE name LIKE '%x'").is_empty());
    assert_eq!(
        uses("SELECT 1 FROM c WHERE name LIKE 'ab%'"),
        [u("c", "name", Usage::LikePrefix)]
    );
}

#[test]
fn joins_resolve_aliases() {
    assert_eq!(
        uses(
            "SELECT o.id FROM orders o JOIN public.contacts AS c ON c.id = o.contact_id \
             WHERE c.email = $1 ORDER BY o.created_at DESC LIMIT $2"
        ),
        [
            u("public.contacts", "id", Usage::Join),
            u("orders", "contact_id", Usage::Join),
            u("public.contacts", "email", Usage::Equality),
            u("orders", "created_at", Usage::OrderBy)
        ]
    );
    let a = analyse("SELECT * FROM a JOIN b USING (k)").unwrap();
    assert_eq!(a.columns.len(), 1);
    assert_eq!(a.columns[0].tables, [t("a"), t("b")]);
    assert_eq!(a.columns[0].usage, Usage::Join);
}

#[test]
fn unqualified_columns_in_a_join_keep_every_candidate() {
    let a = analyse("SELECT 1 FROM a, b WHERE a.x = b.y AND z = $1").unwrap();
    let z = a.columns.iter().find(|c| c.column == "z").unwrap();
    assert_eq!(z.tables, [t("a"), t("b")]);
    assert_eq!(a.tables, [t("a"), t("b")]);
}

#[test]
fn subqueries_and_correlation() {
    assert_eq!(
        uses(
            "SELECT id FROM contacts c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.contact_id = c.id AND o.status = $1) \
             AND c.team IN (SELECT id FROM teams WHERE name = $2)"
        ),
        [
            u("orders", "contact_id", Usage::Join),
            u("contacts", "id", Usage::Join),
            u("orders", "status", Usage::Equality),
            u("contacts", "team", Usage::In),
            u("teams", "name", Usage::Equality)
        ]
    );
    assert_eq!(
        uses("SELECT x.n FROM (SELECT n FROM big WHERE k = $1) x WHERE x.n > $2"),
        [u("big", "k", Usage::Equality)]
    );
}

#[test]
fn ctes_are_not_tables() {
    let a = analyse(
        "WITH recent AS (SELECT * FROM events WHERE at > $1) \
         SELECT r.kind FROM recent r JOIN kinds k ON k.id = r.kind WHERE r.kind = $2",
    )
    .unwrap();
    assert_eq!(a.tables, [t("events"), t("kinds")]);
    let attributed: Vec<_> = a
        .columns
        .iter()
        .map(|c| (c.tables[0].quoted(), c.column.as_str(), c.usage))
        .collect();
    assert_eq!(
        attributed,
        [
            ("events".to_string(), "at", Usage::Range),
            ("kinds".to_string(), "id", Usage::Join)
        ]
    );
    assert!(a.select_star);
}

#[test]
fn quoted_identifiers_keep_their_case_and_schema_names_are_kept() {
    assert_eq!(
        uses(r#"SELECT 1 FROM "Sales"."Big Table" bt WHERE bt."Email" = $1 AND bt.Name = $2"#),
        [
            u(r#""Sales"."Big Table""#, "Email", Usage::Equality),
            u(r#""Sales"."Big Table""#, "name", Usage::Equality)
        ]
    );
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_ident("contacts_2"), "contacts_2");
}

#[test]
fn update_and_delete_filters() {
    assert_eq!(
        uses("UPDATE contacts SET name = $1 WHERE email = $2"),
        [u("contacts", "email", Usage::Equality)]
    );
    assert_eq!(
        uses("DELETE FROM s.contacts WHERE owner_id = $1"),
        [u("s.contacts", "owner_id", Usage::Equality)]
    );
}

#[test]
fn lints() {
    let star = analyse("SELECT * FROM contacts WHERE email = $1").unwrap();
    assert!(star.select_star && star.unbounded);
    let qualified = analyse("SELECT c.* FROM contacts c LIMIT $1").unwrap();
    assert!(qualified.select_star && !qualified.unbounded);
    let count = analyse("SELECT count(*) FROM contacts").unwrap();
    assert!(!count.select_star && !count.unbounded);
    let grouped = analyse("SELECT count(*) FROM contacts GROUP BY owner").unwrap();
    assert!(grouped.unbounded);
    let fetch = analyse("SELECT id FROM contacts FETCH FIRST 10 ROWS ONLY").unwrap();
    assert!(!fetch.unbounded);
    let no_from = analyse("SELECT $1").unwrap();
    assert!(!no_from.unbounded);
    let insert = analyse("INSERT INTO contacts (email) VALUES ($1)").unwrap();
    assert!(!insert.unbounded && !insert.select_star);
}

#[test]
fn texts_that_do_not_parse_are_errors() {
    assert!(analyse("SELECT id FROM contacts WHERE email = ").is_err());
    assert!(analyse("SELEC 1").is_err());
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(analyse(&deep).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text, valid or not, truncated anywhere: an analysis or an error, never a panic.
    #[test]
    fn hostile_texts_never_panic(text in "\\PC{0,200}") {
        let _ = analyse(&text);
    }

    #[test]
    fn truncated_statements_never_panic(cut in 0usize..400) {
        let sql = "WITH x AS (SELECT a.* FROM \"S\".t a JOIN u ON u.id = a.u WHERE a.k IN ($1, $2) AND a.v LIKE $3) \
                   SELECT * FROM x WHERE EXISTS (SELECT 1 FROM w WHERE w.x = x.k) ORDER BY x.k DESC LIMIT $4";
        let end = sql.char_indices().map(|(i, _)| i).chain([sql.len()]).rfind(|i| *i <= cut).unwrap_or(0);
        let _ = analyse(&sql[..end]);
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(prop::sample::select(vec![
        "SELECT", "*", "FROM", "t", "a", ".", "WHERE", "=", "$1", "(", ")", "JOIN", "ON", "AND",
        "OR", "IN", "LIKE", "ORDER", "BY", "WITH", "AS", ",", "EXISTS", "\"Q\"", "LIMIT", "UNION",
    ]), 0..60)) {
        let _ = analyse(&tokens.join(" "));
    }
}
