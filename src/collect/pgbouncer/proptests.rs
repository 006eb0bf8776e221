//! Property tests of the admin-console parsers: any mix of known, unknown and missing columns,
//! NULLs and garbage values gives series or an error naming the column, never a panic.

use proptest::prelude::*;

use super::{AdminRow, databases, pools, stats};

/// A row as a list of (column, value).
#[derive(Debug, Clone)]
struct MapRow(Vec<(String, Option<String>)>);

impl AdminRow for MapRow {
    fn column_names(&self) -> Vec<&str> {
        self.0.iter().map(|(c, _)| c.as_str()).collect()
    }

    fn value(&self, column: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, v)| v.as_deref())
    }
}

/// Every column the parsers read, from every SHOW they parse.
const KNOWN: &[&str] = &[
    "database",
    "user",
    "name",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "pool_size",
    "reserve_pool",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_server_assignment_count",
    "host",
    "port",
];

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => (0i64..1_000_000).prop_map(|n| Some(n.to_string())),
        1 => any::<i64>().prop_map(|n| Some(n.to_string())),
        1 => Just(None),
        1 => Just(Some(String::new())),
        1 => Just(Some("99999999999999999999999".to_owned())),
        1 => ".{0,12}".prop_map(Some),
        1 => Just(Some("pgbouncer".to_owned())),
    ]
}

fn column() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KNOWN).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
        1 => ".{0,8}",
    ]
}

fn rows() -> impl Strategy<Value = Vec<MapRow>> {
    proptest::collection::vec(
        proptest::collection::vec((column(), value()), 0..40).prop_map(MapRow),
        0..6,
    )
}

/// A complete, well-formed row of every family: the parsers must accept it.
fn complete(row_name: &str) -> MapRow {
    MapRow(
        KNOWN
            .iter()
            .map(|c| {
                let v = match *c {
                    "database" | "name" => row_name.to_owned(),
                    "user" => "app".to_owned(),
                    "pool_mode" => "session".to_owned(),
                    "host" => "127.0.0.1".to_owned(),
                    _ => "7".to_owned(),
                };
                ((*c).to_owned(), Some(v))
            })
            .collect(),
    )
}

fn check<T>(result: Result<T, crate::collect::CollectError>) {
    if let Err(e) = result {
        let text = e.to_string();
        assert!(
            text.contains("column") && text.starts_with("SHOW "),
            "the error names neither the command nor the column: {text}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_rows_give_series_or_an_error_naming_the_column(rows in rows()) {
        check(pools::summarise(&rows));
        check(stats::summarise(&rows));
        check(databases::summarise(&rows));
    }

    #[test]
    fn extra_columns_and_any_order_do_not_matter(
        extra in proptest::collection::vec(("[a-z_]{1,12}", value()), 0..10),
        seed in any::<u64>(),
    ) {
        let mut row = complete("app");
        for (c, v) in extra {
            if !KNOWN.contains(&c.as_str()) {
                row.0.push((c, v));
            }
        }
        // A deterministic shuffle.
        let n = row.0.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
            row.0.swap(i, j);
        }
        let rows = vec![row, complete("pgbouncer")];
        let (_, pools) = pools::summarise(&rows).unwrap();
        prop_assert_eq!(pools.len(), 1, "the admin console's own pool is left out");
        prop_assert_eq!(pools[0].clients_active, 7);
        stats::summarise(&rows).unwrap();
        let (_, dbs) = databases::summarise(&rows).unwrap();
        prop_assert_eq!(dbs.len(), 1);
    }
}
