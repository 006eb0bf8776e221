//! Unit tests of the summary, the lints and the bounded cache.

use super::analyse::derive;
use super::*;

fn s(sql: &str) -> String {
    derive(sql).summary
}

fn lints(sql: &str) -> Vec<&'static str> {
    derive(sql).facts.lints().map(Lint::name).collect()
}

#[test]
fn derives_operation_and_main_table() {
    assert_eq!(s("SELECT $1::int4"), "SELECT");
    assert_eq!(s("select id from users where id = $1"), "SELECT users");
    assert_eq!(
        s("SELECT * FROM ONLY public.Users u"),
        "SELECT public.users"
    );
    assert_eq!(s(r#"SELECT * FROM "Campaign""#), "SELECT Campaign");
    assert_eq!(
        s("insert into contacts(a,b) values ($1,$2)"),
        "INSERT contacts"
    );
    assert_eq!(s("UPDATE accounts SET x = 1"), "UPDATE accounts");
    assert_eq!(s("DELETE FROM sessions WHERE t < now()"), "DELETE sessions");
    assert_eq!(s("COPY contacts (a) FROM STDIN"), "COPY contacts");
    assert_eq!(s("COPY (SELECT 1) TO STDOUT"), "COPY");
    assert_eq!(s("TRUNCATE TABLE t1"), "TRUNCATE t1");
    assert_eq!(s("BEGIN"), "BEGIN");
    assert_eq!(s("CREATE UNIQUE INDEX i ON t(a)"), "CREATE INDEX");
    assert_eq!(s("create table if not exists x (a int)"), "CREATE TABLE");
    assert_eq!(
        s("MERGE INTO tgt USING src ON true WHEN MATCHED THEN DO NOTHING"),
        "MERGE tgt"
    );
    assert_eq!(s("frobnicate the database"), "OTHER");
    assert_eq!(s(""), "OTHER");
}

#[test]
fn skips_comments_ctes_literals_and_subqueries() {
    assert_eq!(
        s("/* app=web /* nested */ */ -- hi\n SELECT 'FROM x' AS a, $$ FROM y $$ FROM z"),
        "SELECT z"
    );
    assert_eq!(
        s(
            "WITH a AS (SELECT * FROM x), b(c) AS MATERIALIZED (DELETE FROM y RETURNING *) \
           INSERT INTO archive SELECT * FROM b"
        ),
        "INSERT archive"
    );
    assert_eq!(s("SELECT extract(epoch FROM now())"), "SELECT");
    assert_eq!(
        s("SELECT * FROM (SELECT * FROM inner_t) sub"),
        "SELECT inner_t"
    );
    assert_eq!(
        s("(SELECT 1 FROM t1) UNION (SELECT 2 FROM t2)"),
        "SELECT t1"
    );
    assert_eq!(s("SELECT E'it\\'s FROM' FROM t"), "SELECT t");
    assert_eq!(s("SELECT 1.5 FROM s.t"), "SELECT s.t");
}

#[test]
fn rulebook_lints_respect_literals_comments_and_depth() {
    assert_eq!(
        lints("SELECT * FROM campaign WHERE id = $1"),
        ["select_star"]
    );
    assert_eq!(
        lints("SELECT c.*, 1 FROM campaign c WHERE id = $1"),
        ["select_star"]
    );
    assert_eq!(lints("SELECT DISTINCT * FROM t LIMIT 5"), ["select_star"]);
    assert_eq!(
        lints("SELECT * FROM campaign"),
        ["select_star", "unbounded_select"]
    );
    assert_eq!(lints("TABLE campaign"), ["select_star", "unbounded_select"]);
    assert_eq!(lints("SELECT id, name FROM campaign"), ["unbounded_select"]);
    assert_eq!(
        lints("SELECT id FROM a JOIN b ON a.x = b.x ORDER BY id"),
        ["unbounded_select"]
    );
    assert_eq!(
        lints("WITH r AS (SELECT id FROM t WHERE x) SELECT * FROM r"),
        ["select_star", "unbounded_select"]
    );
    for bounded in [
        "SELECT id, name FROM campaign WHERE id = $1",
        "SELECT id FROM campaign ORDER BY id LIMIT 50",
        "SELECT id FROM campaign FETCH FIRST 10 ROWS ONLY",
        "SELECT count(*) FROM campaign",
        "SELECT status, count(*) FROM campaign GROUP BY status",
        "SELECT a * b FROM t WHERE id = 1",
        "SELECT id FROM t WHERE EXISTS (SELECT * FROM u WHERE u.t = t.id)",
        "SELECT 'SELECT * FROM t' AS q",
        "SELECT $$ SELECT * FROM t $$",
        "/* SELECT * FROM t */ SELECT 1",
        "SELECT id FROM generate_series(1, 10) id",
        "SELECT 1",
        "SELECT x FROM (SELECT x FROM t WHERE y) s",
        "INSERT INTO t SELECT * FROM u WHERE false",
        "UPDATE t SET a = 1",
    ] {
        assert_eq!(lints(bounded), Vec::<&str>::new(), "{bounded}");
    }
}

#[test]
fn normalised_text_and_fingerprints() {
    let a = derive("SELECT name FROM contacts WHERE id = 42 AND email = 'a@x' -- c");
    let b = derive("SELECT  name FROM contacts\nWHERE id = $1 AND email = E'b\\'x'");
    assert_eq!(
        &*a.facts.normalized,
        "SELECT name FROM contacts WHERE id = ? AND email = ?"
    );
    assert_eq!(a.facts.normalized, b.facts.normalized);
    assert_eq!(a.facts.fingerprint, b.facts.fingerprint);
    let c = derive("SELECT name FROM contacts WHERE id = ANY($1)");
    assert_ne!(a.facts.fingerprint, c.facts.fingerprint);
    assert_eq!(
        derive("SELECT 1.5, .5 FROM t").facts.normalized.as_ref(),
        "SELECT ? , ? FROM t"
    );
}

#[test]
fn cardinality_is_bounded_and_cache_memory_too() {
    let sum = Summarizer::new(10);
    for i in 0..5000 {
        let l = sum.for_sql(&format!("SELECT * FROM table_{i} WHERE id = {i}"));
        assert_eq!(l.operation(), "SELECT");
    }
    assert_eq!(sum.distinct_names(), 10);
    assert!(read(&sum.by_sql).len() <= SQL_CACHE_ENTRIES);
    assert_eq!(
        sum.for_sql("SELECT * FROM table_4999").summary(),
        OTHER_SUMMARY
    );
    assert_eq!(
        sum.for_sql("SELECT * FROM table_3").summary(),
        "SELECT table_3"
    );
    // Caller names share the same budget.
    assert_eq!(sum.named("load_campaign", None).0.summary(), OTHER_SUMMARY);
    let long = "x".repeat(1000);
    assert!(Summarizer::new(5).intern(&long).len() <= MAX_SUMMARY_LEN);
}

#[test]
fn never_panics_on_odd_input() {
    for sql in [
        "'",
        "\"",
        "$",
        "$$",
        "$a$",
        "/*",
        "--",
        "E'",
        "E'\\",
        "(((",
        ")))",
        "é FROM ü",
        "SELECT FROM",
        "WITH",
        "WITH a AS (",
        "INSERT",
        "select * from \"",
    ] {
        let _ = derive(sql);
    }
}
